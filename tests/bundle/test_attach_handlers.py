"""attach_handlers: attach in order, skipping disabled (None) handlers."""

from __future__ import annotations

from ignite.engine import Engine, Events

from harmonize.bundle import attach_handlers


class Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def attach(self, engine):
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: self.log.append(self.name))


def test_order_is_kept_and_none_skipped():
    log = []
    engine = Engine(lambda e, b: None)
    assert attach_handlers(engine, [Recorder("unlearning", log), None, Recorder("checkpoint", log)]) is engine
    engine.run([0], max_epochs=2)
    assert log == ["unlearning", "checkpoint", "unlearning", "checkpoint"]
