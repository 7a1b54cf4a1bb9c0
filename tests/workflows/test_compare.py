"""compare_methods on the tiny cohort: every method on the same data, one site held out, one table and report."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError
from harmonize.keys import Keys, Split
from harmonize.workflows.brain_age import BrainAgeSettings
from harmonize.workflows.compare import PAIRED_KEY, CompareSettings, _held_out_site, compare_methods
from harmonize.workflows.model_file import load_model
from harmonize.workflows.unlearning import UnlearningSettings

METHODS = ("none", "unlearning", "dann", "combat", "erasure", "unlearning_erasure")
#: The held-out site (the held-out scans of the other two hold two of each sex, so every probe runs).
UNSEEN = "site1"


def _training(batch_size: int = 4) -> BrainAgeSettings:
    unlearning = UnlearningSettings(warmup_epochs=1, beta=1.0)
    return BrainAgeSettings(unlearning=unlearning, max_epochs=2, channels=(8, 8, 8, 8), feature_dim=16,
                            batch_size=batch_size)


@pytest.fixture(scope="module")
def compared(tiny_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    lines = []
    settings = CompareSettings(methods=METHODS, training=_training(), unseen_site=UNSEEN, permutations=5)
    return out, compare_methods(tiny_cohort, out, settings, report=lines.append), lines


def test_every_method_is_scored_on_the_same_scans(compared):
    out, metrics, lines = compared
    assert metrics["chance"] == pytest.approx(0.5)
    assert metrics["sites"] == ["site0", "site2"] and metrics["unseen_site"] == UNSEEN
    for method in METHODS:
        m = metrics[method]
        assert 0.0 <= m["site_probe_bacc"] <= 1.0 and m["age_mae"] >= 0
        assert m["unseen_site_mae"] > 0 and m["n_subjects"] == 4
        assert 0 < m["site_probe_p"] <= 1
    assert metrics["unlearning"]["domain_head_acc"] >= 0 and "domain_head_acc" not in metrics["none"]
    assert any(line.startswith("  unlearning: site probe") and "unseen-site MAE" in line for line in lines)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics, default=str))
    for method in METHODS:  # the per-site offsets of the held-out scans of the training sites, and their spread
        offsets = metrics[method]["site_mean_signed_error"]
        assert sorted(offsets) == ["site0", "site2"]
        assert metrics[method]["site_bias_spread"] == pytest.approx(max(offsets.values()) - min(offsets.values()))


def test_one_seed_keeps_the_shape_of_several(compared):
    _, metrics, _ = compared
    assert metrics["seeds"] == [0]
    for method in METHODS:
        m = metrics[method]
        assert len(m["per_seed"]) == 1 and m["per_seed"][0]["seed"] == 0
        assert m["site_probe_bacc"] == m["per_seed"][0]["site_probe_bacc"] and m["site_probe_bacc_ci"] is None
        assert (PAIRED_KEY in m) == (method != "none")
    assert metrics["unlearning"][PAIRED_KEY]["age_mae"] == {
        "difference": pytest.approx(metrics["unlearning"]["age_mae"] - metrics["none"]["age_mae"]), "p": None}


def test_erasure_changes_the_features_and_scores_the_unseen_site(compared):
    _, metrics, _ = compared
    for erased, base in (("erasure", "none"), ("unlearning_erasure", "unlearning")):
        assert metrics[erased]["site_probe_bacc"] != metrics[base]["site_probe_bacc"] or (
            metrics[erased]["age_mae"] != metrics[base]["age_mae"])
        assert metrics[erased]["unseen_site_mae"] > 0 and metrics[erased]["n_unseen"] == metrics[base]["n_unseen"]
        assert metrics[erased]["seconds"] >= metrics[base]["seconds"] - 1e-9


def test_combat_passes_the_unseen_site_through(compared):
    _, metrics, _ = compared
    combat = metrics["combat"]
    assert combat["unseen_site_handling"] == "passthrough"
    # unharmonised features through the same regressor: the plain network's own error
    assert combat["unseen_site_mae"] == pytest.approx(metrics["none"]["unseen_site_mae"], rel=1e-5)
    assert combat["age_mae_per_site"][f"{UNSEEN} (unseen)"] == combat["unseen_site_mae"]


def test_combat_age_probe_is_not_measured(compared):
    _, metrics, lines = compared
    combat = metrics["combat"]
    assert combat["age_probe_r2"] is None and combat["age_probe_mae"] is None
    assert "true age" in combat["age_probe_note"]
    assert metrics["none"]["age_probe_r2"] is not None
    assert any(line.startswith("  combat: site probe") and "age R2 from features n/a" in line for line in lines)


def test_models_are_saved_without_the_unseen_site(compared):
    out, _, _ = compared
    assert sorted(p.name for p in (out / "models").iterdir()) == ["dann.pt", "none.pt", "unlearning.pt"]
    model = load_model(out / "models" / "unlearning.pt")
    assert list(model.site_index) == ["site0", "site2"]
    assert model.handler.confounds[0].num_classes == 2
    assert model.settings.unlearning.method == "unlearning" and model.settings.batch_size == 4
    assert load_model(out / "models" / "dann.pt").settings.unlearning.reversal_weight == CompareSettings().reversal_weight


def test_table_and_report(compared):
    out, _, _ = compared
    table = (out / "comparison.md").read_text()
    assert "| Unseen-site MAE (years) |" in table
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows == list(METHODS)
    document = json.loads((out / "comparison.json").read_text())
    assert [r["method"] for r in document["rows"]] == list(METHODS)
    text = (out / "report.html").read_text()
    for method in METHODS:
        assert f'<td class="method">{method}</td>' in text
    assert f"&#x27;{UNSEEN}&#x27;" in text and "Its scans were left unharmonised (passthrough)" in text
    assert text.count("data:image/png;base64,") == 4  # bars, per-site error, embeddings, training curves
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "comparison.png", "embeddings.png", "per_site_error.png", "training.png"]


SEEDED = ("none", "unlearning", "combat")


def _without_times(metrics):
    """The figures that must repeat exactly: all but wall times (and the settings, which name the jobs)."""
    if isinstance(metrics, dict):
        return {k: _without_times(v) for k, v in metrics.items() if k not in ("seconds", "seconds_ci", "settings")}
    if isinstance(metrics, list):
        return [_without_times(v) for v in metrics]
    return metrics


@pytest.fixture(scope="module")
def seeded(tiny_cohort, tmp_path_factory):
    """Two seeds, one job after another, and the same in two worker processes."""
    runs = {}
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"seeds_jobs{jobs}")
        settings = CompareSettings(methods=SEEDED, training=_training(), unseen_site=UNSEEN, permutations=5, seeds=2,
                                   jobs=jobs)
        runs[jobs] = (out, compare_methods(tiny_cohort, out, settings, report=lambda line: None))
    return runs


def test_one_seed_gives_identical_metrics_twice(compared, seeded):
    # seed 0 trained and audited again in this process, beside seed 1 and without DANN: the very same figures
    _, single, _ = compared
    _, several = seeded[1]
    for method in SEEDED:
        assert _without_times(several[method]["per_seed"][0]) == _without_times(single[method]["per_seed"][0])


def test_jobs_do_not_change_the_metrics(seeded):
    (_, one_by_one), (_, parallel) = seeded[1], seeded[2]
    assert parallel["settings"]["jobs"] == 2
    assert _without_times(parallel) == _without_times(one_by_one)


def test_figures_over_seeds(seeded):
    out, metrics = seeded[1]
    assert metrics["seeds"] == [0, 1]
    for method in SEEDED:
        m = metrics[method]
        assert [entry["seed"] for entry in m["per_seed"]] == [0, 1]
        probes = [entry["site_probe_bacc"] for entry in m["per_seed"]]
        assert m["site_probe_bacc"] == pytest.approx(sum(probes) / 2)
        half = 12.7062047 * abs(probes[0] - probes[1]) / 2  # t(0.975, 1 df) * sd / sqrt 2, sd = |a - b| / sqrt 2
        assert m["site_probe_bacc_ci"] == pytest.approx([m["site_probe_bacc"] - half, m["site_probe_bacc"] + half])
        assert m["n_subjects"] == 4
    none, unlearning = metrics["none"]["per_seed"], metrics["unlearning"]["per_seed"]
    differences = [u["age_mae"] - n["age_mae"] for u, n in zip(unlearning, none)]
    paired = metrics["unlearning"][PAIRED_KEY]["age_mae"]
    assert paired["difference"] == pytest.approx(sum(differences) / 2)
    # paired t-test with 1 df: t = mean / (|d1 - d2| / 2), p = 1 - 2 atan(|t|) / pi
    t = (sum(differences) / 2) / (abs(differences[0] - differences[1]) / 2)
    assert paired["p"] == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi)
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "none.pt", "none_seed0.pt", "none_seed1.pt", "unlearning.pt", "unlearning_seed0.pt", "unlearning_seed1.pt"]
    assert load_model(out / "models" / "none_seed1.pt").settings.seed == 1
    assert load_model(out / "models" / "none.pt").settings.seed == 0
    text = (out / "report.html").read_text()
    verdict = text[text.index('<p class="verdict">'):]
    assert verdict.startswith(('<p class="verdict">Over 2 seeds the numbers do not support',
                               '<p class="verdict">Unlearning '))
    assert "paired p" in verdict[:600]
    assert f">{metrics['none']['site_probe_bacc']:.3f} [" in text
    assert "error bars: 95 % t-interval over seeds" in text


def test_combat_refusal_is_recorded(tiny_cohort, tmp_path):
    settings = CompareSettings(methods=("none", "combat"), training=_training(), unseen_site=UNSEEN,
                               combat_unseen="error", permutations=0, save_models=False)
    metrics = compare_methods(tiny_cohort, tmp_path, settings)
    combat = metrics["combat"]
    assert combat["unseen_site_mae"] is None and combat["unseen_site_handling"] == "error"
    assert combat["unseen_site_error"].startswith(f"unseen site '{UNSEEN}': ComBat cannot harmonise site(s)")
    assert "ComBat refused the unseen site" in (tmp_path / "report.html").read_text()
    assert not (tmp_path / "models").exists()


def test_settings_errors(tiny_cohort, tmp_path):
    with pytest.raises(ConfigError, match="'combat' harmonises the features of the network trained with 'none'"):
        CompareSettings(methods=("unlearning", "combat"))
    with pytest.raises(ConfigError, match="'unlearning_erasure' .* trained with 'unlearning'; add 'unlearning'"):
        CompareSettings(methods=("none", "unlearning_erasure"))
    with pytest.raises(ConfigError, match="Argument 'methods'"):
        CompareSettings(methods="none,unlearnin")
    with pytest.raises(ConfigError, match="Argument 'combat_unseen'"):
        CompareSettings(combat_unseen="drop")
    with pytest.raises(ConfigError) as err:  # every bad choice at once
        CompareSettings(methods="combat,unlearnin", combat_unseen="drop", first_seed_only=("danm",))
    assert [p.split(":")[0] for p in err.value.problems] == ["Argument 'methods'"] * 2 + [
        "Argument 'combat_unseen'", "Argument 'first_seed_only'"]
    assert "'combat' harmonises the features of the network trained with 'none'" in err.value.problems[1]
    with pytest.raises(ConfigError) as err:
        CompareSettings(seeds=0, jobs=0, permutations="many")
    assert err.value.problems == ["'permutations' must be an integer >= 0, got 'many' (str)",
                                  "'jobs' must be an integer >= 1, got 0 (int): the training runs at once",
                                  "'seeds' must be an integer >= 1, got 0 (int): the number of seeds each method "
                                  "trains on"]
    for seeds in ([3, 3], [], [1, -2], True, "12", [1.0]):
        with pytest.raises(ConfigError) as err:
            CompareSettings(seeds=seeds, jobs=0)
        assert err.value.message == "CompareSettings: invalid arguments."
        assert err.value.problems == [
            "'jobs' must be an integer >= 1, got 0 (int): the training runs at once",
            f"'seeds' must be a sequence of 1 or more distinct integers >= 0, got {seeds!r} ({type(seeds).__name__}): "
            "give the number of seeds each method trains on, or the seeds themselves, each once"]
    with pytest.raises(ConfigError, match=r"'jobs' must be an integer >= 1, got 1.5 \(float\)"):
        CompareSettings(jobs=1.5)
    with pytest.raises(ConfigError) as err:  # a training part given as a dict: its problems join the others
        CompareSettings(methods="none,danm", training={"max_epochs": 0, "unlearning": {"beta": -1}}, seeds=0)
    assert err.value.problems[0].startswith("Argument 'methods': By 'danm', did you mean 'dann'?")
    assert err.value.problems[1:] == [
        "'beta' must be a finite number >= 0, got -1 (int)", "'max_epochs' must be an integer >= 1, got 0 (int)",
        "'seeds' must be an integer >= 1, got 0 (int): the number of seeds each method trains on"]
    assert CompareSettings(seeds=3, training=_training()).seed_values() == (0, 1, 2)
    assert CompareSettings(seeds=[7, 2]).seed_values() == (7, 2)
    settings = CompareSettings(methods="none, dann,none", training=_training(batch_size=8))
    assert settings.methods == ("none", "dann")
    run = settings.run_settings("dann", n_sites=3)
    assert run.batch_size == 9 and run.unlearning.method == "dann" and run.unlearning.reversal_weight == settings.reversal_weight
    assert settings.run_settings("unlearning", n_sites=2).unlearning.beta == 1.0

    with pytest.raises(ConfigError, match=r"'site9' is not a site of the manifest; its sites are \['site0'"):
        compare_methods(tiny_cohort, tmp_path / "a", CompareSettings(unseen_site="site9"))
    one_site = read_manifest(tiny_cohort).query("site != 'site0'")
    with pytest.raises(ConfigError, match=r"at least 2 training sites after holding out 'site2'.*\['site1'\]"):
        compare_methods(one_site, tmp_path / "b", CompareSettings())


def test_only_unlearning_on_biased_sites_trains_with_the_site_agreement_loss():
    from harmonize import defaults

    settings = CompareSettings(methods="none,unlearning,dann", training=_training())
    agreement = {(m, biased): settings.run_settings(m, 2, biased).site_agreement
                 for m in ("none", "unlearning", "dann") for biased in (False, True)}
    assert agreement == {("none", False): None, ("none", True): None, ("dann", False): None, ("dann", True): None,
                         ("unlearning", False): None, ("unlearning", True): defaults.SITE_AGREEMENT}
    # with the loss, no adversary: the two together lost the task
    assert settings.run_settings("unlearning", 2, True).unlearning.method == "none"
    assert settings.run_settings("unlearning", 2, False).unlearning.method == "unlearning"
    chosen = CompareSettings(training=replace(_training(), site_agreement=0.5))  # the user's weight, any design
    assert [chosen.run_settings("unlearning", 2, b).site_agreement for b in (False, True)] == [0.5, 0.5]
    assert chosen.run_settings("none", 2, True).site_agreement is None


def test_held_out_site_choices(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    assert _held_out_site(frame, "last") == "site2"
    assert _held_out_site(frame, "none") is None
    assert _held_out_site(frame, "site0") == "site0"


def test_first_seed_only_methods_run_once(tiny_cohort, tmp_path):
    from harmonize.workflows.compare import _runs, _training_frame

    frame = read_manifest(tiny_cohort)
    _, index = _training_frame(frame, UNSEEN)
    settings = CompareSettings(methods=("none", "unlearning", "dann", "combat", "erasure"), training=_training(),
                               seeds=3, first_seed_only=("dann", "combat"))
    runs = [(r.method, r.seed, r.posthoc) for r in _runs(frame, UNSEEN, index, settings, tmp_path, progress=False)]
    assert runs == [("none", 0, ("combat", "erasure")), ("unlearning", 0, ()), ("dann", 0, ()),
                    ("none", 1, ("erasure",)), ("unlearning", 1, ()), ("none", 2, ("erasure",)), ("unlearning", 2, ())]
    with pytest.raises(ConfigError, match="first_seed_only"):
        CompareSettings(first_seed_only=("danm",))


def test_a_random_split_of_biased_sites_is_named_in_the_report(tiny_cohort_biased, tmp_path):
    lines = []
    settings = CompareSettings(methods=("none",), training=_training(), unseen_site="none", permutations=0,
                               save_models=False)
    frame = read_manifest(tiny_cohort_biased)
    held = frame[Keys.SPLIT] != Split.TRAIN
    ages = frame[~held].groupby(Keys.SITE)[Keys.AGE]
    # every held-out scan in its site's window
    frame.loc[held, Keys.AGE] = frame.loc[held, Keys.SITE].map((ages.min() + ages.max()) / 2)
    compare_methods(frame, tmp_path, settings, report=lines.append)
    note = next(line for line in lines if "lie in their own site's training age range" in line)
    assert note.startswith("100% of the ") and any(line.startswith("Biased sites") for line in lines)
    assert "lie in their own site&#x27;s training age range" in (tmp_path / "report.html").read_text()
