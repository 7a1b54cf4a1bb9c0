import pytest

from harmonize.errors import ConfigError
from harmonize.handlers import HeadWarmup


@pytest.mark.parametrize(
    "until, losses, epochs",
    [
        (None, [5.0, 5.0, 5.0], 1),  # no rule: the warm-up keeps its length
        (1.0, [0.5, 5.0, 5.0], 1),  # the task is learnt when the warm-up ends
        (1.0, [5.0, 1.0, 0.5], 3),  # at or above the threshold: one more epoch each time
        (1.0, [5.0, 5.0, 5.0, 5.0], 4),  # never past half of the run's 8 epochs (epoch 4 < 8 // 2 is false)
        (1.0, [5.0, None, 5.0], 2),  # an epoch without a task loss ends it
    ],
)
def test_the_warmup_goes_on_while_the_task_loss_is_high(until, losses, epochs):
    warmup = HeadWarmup(1, until)
    for epoch, loss in enumerate(losses, start=1):
        warmup.epoch_completed(epoch, loss, max_epochs=8)
    assert warmup.epochs == epochs
    assert [warmup.covers(e) for e in range(1, epochs + 2)] == [True] * epochs + [False]
    assert warmup.config() == {"epochs": epochs, "until_loss": until}


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        HeadWarmup(-1, float("inf"))
    assert err.value.message == "HeadWarmup: invalid arguments."
    assert err.value.problems == ["'warmup_epochs' must be an integer >= 0, got -1 (int)",
                                  "'warmup_until_loss' must be a finite number > 0 or None, got inf (float)"]
    assert HeadWarmup().epochs == 0 and not HeadWarmup().covers(1)
