"""Every route a learner takes: a machine without /proc or `resource` (macOS, Windows), results kept outside
the clone (Colab with Google Drive), a notebook whose earlier notebooks have not run here, and a reward model
trained on other weights or data than the run that would use it."""

import builtins
import copy
import json
import sys
import types

import pytest
import torch

from alignlib import config, data, machine, models, records, runs
from test_reward import toy_pairs


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Records, checkpoints and published files of a repository at tmp_path/repo; no output root set."""
    monkeypatch.setattr(records, "ROOT", tmp_path / "repo")
    monkeypatch.delenv(records.RESULTS_ENV, raising=False)
    monkeypatch.delenv("ALIGNLIB_AMP", raising=False)
    monkeypatch.delenv(records.REUSE_ENV, raising=False)
    return tmp_path


def no_proc_no_resource(monkeypatch):
    """A machine as alignlib sees it on Windows, at worst: no /proc to read, no `resource` module, and psutil
    unable to tell (denied)."""
    import psutil


    real_open = builtins.open

    def open_without_proc(file, *args, **kwargs):
        if str(file).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(file))
        return real_open(file, *args, **kwargs)

    def denied(*args, **kwargs):
        raise psutil.AccessDenied()

    monkeypatch.setattr(builtins, "open", open_without_proc)
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError, as on Windows
    monkeypatch.setattr(psutil, "Process", denied)
    machine.cpuinfo.cache_clear()
    monkeypatch.setattr(machine, "cpuinfo", lambda key: None)  # what the cached reader gives without /proc


def test_memory_is_read_through_psutil_on_every_platform():
    with machine.PeakMemory() as mem:
        block = torch.ones(64, 2**20, dtype=torch.uint8)  # 64 MB
        block.add_(1)
    assert mem.peak_mb > 64 and machine.peak_memory_mb() >= mem.peak_mb * 0.5


def test_the_share_of_the_cpus_other_work_took_by_hand():
    # 10 s on 2 cores = 20 core-seconds; the machine was busy for 15 of them, this process for 5: others took 10
    assert machine.others_cpu_share((100.0, 40.0, 1000.0), (115.0, 45.0, 1010.0), cores=2) == 0.5
    assert machine.others_cpu_share((100.0, 40.0, 1000.0), (109.9, 50.0, 1010.0), cores=2) == 0.0  # alone
    assert machine.others_cpu_share(None, (1.0, 1.0, 1.0)) is None  # the platform did not tell
    assert machine.others_cpu_share((1.0, 1.0, 5.0), (2.0, 1.0, 5.0)) is None  # no time passed


def test_a_run_beside_other_work_says_so(monkeypatch):
    """A timing made while another job shares the cores must be marked: PeakMemory measures the others' share."""
    real = machine.cpu_seconds
    readings = iter([(0.0, 0.0, 0.0), (18.0, 10.0, 10.0)])  # 10 s, 2 cores: busy 18 core-s, 10 of them ours
    monkeypatch.setattr(machine, "cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    with machine.PeakMemory() as mem:
        pass
    assert mem.others_cpu_share == pytest.approx(0.4)
    reading = real()
    assert reading is None or (reading[0] >= 0 and reading[1] > 0)


def test_macos_reports_its_peak_in_bytes_not_kib(monkeypatch):
    fake = types.SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: types.SimpleNamespace(ru_maxrss=300 * 2**20))
    monkeypatch.setitem(sys.modules, "resource", fake)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert machine.peak_memory_mb() == 300.0
    monkeypatch.setattr(sys, "platform", "linux")
    assert machine.peak_memory_mb() == 300 * 1024  # Linux: KiB


def test_without_proc_and_resource_a_run_still_writes_its_record(in_tmp, monkeypatch, tiny_rm, tokenizer):
    """The memory watcher used to die reading /proc/self/status and raise after training, before the record."""
    smoke = config.get_profile("smoke")
    cfg = config.with_overrides(smoke.rm_scalar, amp="none")
    model = tiny_rm(seed=1)
    monkeypatch.setattr(models, "new_reward_model", lambda cfg: model)
    monkeypatch.setattr(models, "load_reward_model", lambda adapter, labels: copy.deepcopy(model))
    short_chosen = data.PreferencePair(({"role": "user", "content": "Capital of France?"},), "Paris.",
                                       "I am not sure, it could be one of several cities.", "t")
    prefs = data.PreferenceData(toy_pairs()[:8], [*toy_pairs()[8:], short_chosen], "toy")
    no_proc_no_resource(monkeypatch)
    assert machine.cpu_model() not in ("", None)  # "unknown" at worst, from `platform` otherwise
    record, _, _ = runs.reward_model_run("rm_x", smoke, cfg, tokenizer, prefs)
    on_disk = json.loads((in_tmp / "repo" / "results" / "smoke" / "rm_x.json").read_text())
    assert on_disk["name"] == record["name"] == "rm_x" and on_disk["peak_memory_mb"] is None
    assert on_disk["metrics"]["peak_memory_train_mb"] is None and 0 <= on_disk["metrics"]["val_accuracy"] <= 1


def test_import_alignlib_does_not_need_resource():
    """Native Windows has no `resource`: importing the package (machine, records, runs) must not need it."""
    import subprocess

    code = ("import sys, psutil\n"  # psutil's Linux backend uses `resource`; its Windows one does not
            "sys.modules['resource'] = None\n"
            "import alignlib.machine, alignlib.records, alignlib.runs, alignlib.precision\n"
            "print(alignlib.machine.peak_memory_mb() is None or alignlib.machine.peak_memory_mb() > 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


# ----------------------------------------------------------------- results outside the clone ($ALIGNLIB_RESULTS_DIR)

def test_results_and_checkpoints_go_to_the_output_root(in_tmp, monkeypatch):
    drive = in_tmp / "drive" / "course"
    monkeypatch.setenv(records.RESULTS_ENV, str(drive))
    assert records.results_dir("full") == drive / "results" / "full"
    assert records.checkpoints_dir("full") == drive / "checkpoints" / "full"
    assert records.record_path("rm_scalar", "full") == drive / "results" / "full" / "rm_scalar.json"
    assert records.state_dir(config.get_profile("full"), "reinforce_ema") == drive / "checkpoints/full/reinforce_ema_state"
    # paths in records stay relative, to whichever root holds them, and resolve back
    adapter = drive / "checkpoints" / "full" / "rm_scalar"
    adapter.mkdir(parents=True)
    assert records.portable(adapter) == "checkpoints/full/rm_scalar" and records.resolve("checkpoints/full/rm_scalar") == adapter
    published = in_tmp / "repo" / "results" / "cpu" / "adapters" / "rm_scalar"
    published.mkdir(parents=True)
    assert records.portable(published) == "results/cpu/adapters/rm_scalar"
    assert records.resolve("results/cpu/adapters/rm_scalar") == published  # not in the output root: the repository's
    assert records.portable("results/cpu/adapters/rm_scalar") == "results/cpu/adapters/rm_scalar"  # as recorded


def test_a_run_writes_its_record_to_the_output_root_and_reads_the_published_ones_from_the_repository(in_tmp, monkeypatch):
    drive = in_tmp / "drive"
    monkeypatch.setenv(records.RESULTS_ENV, str(drive))
    path = records.write_record("rm_x", "smoke", model_source="tiny", data_source="toy", seed=0, wall_time_s=1.0,
                                config={}, metrics={"val_accuracy": 0.5}, amp="none")
    assert path == drive / "results" / "smoke" / "rm_x.json" and not (in_tmp / "repo" / "results").exists()
    assert records.read_record("rm_x", "smoke")["metrics"]["val_accuracy"] == 0.5
    committed = in_tmp / "repo" / "results" / "cpu" / "rm_scalar.json"
    committed.parent.mkdir(parents=True)
    committed.write_text(path.read_text())
    assert records.read_record("rm_scalar", "cpu")["name"] == "rm_x"  # the published record, from the clone
    committed.with_name("seeds.json").write_text('{"ema/n_seeds": 3}')
    assert records.read_summary("seeds", "cpu") == {"ema/n_seeds": 3}  # a published study summary too


def test_a_reward_model_trained_in_the_output_root_comes_before_the_published_one(in_tmp, monkeypatch):
    drive = in_tmp / "drive"
    monkeypatch.setenv(records.RESULTS_ENV, str(drive))
    for where in (in_tmp / "repo" / "results" / "full" / "adapters" / "rm_scalar", drive / "checkpoints" / "full" / "rm_scalar"):
        where.mkdir(parents=True)
        (where / "adapter_config.json").write_text("{}")
        assert records.find_adapter("full", "rm_scalar") == where  # first the published one, then the one trained on this machine


def test_a_run_resumes_from_the_output_root_after_the_machine_is_reset(in_tmp, monkeypatch, tiny_rm, tokenizer):
    """Colab: the VM is reset, the clone is gone, the Drive folder is not. The run continues from its checkpoint."""
    from alignlib import reward_model_loop

    drive = in_tmp / "drive"
    monkeypatch.setenv(records.RESULTS_ENV, str(drive))
    cpu = config.get_profile("cpu")
    cfg = config.with_overrides(cpu.rm_scalar, amp="none", batch_size=2, max_steps=None, epochs=1, warmup_steps=0)
    state = records.state_dir(cpu, "rm_x")
    assert state.is_relative_to(drive)
    pairs = toy_pairs()[:8]
    first = reward_model_loop.train_reward_model(tiny_rm(seed=1), tokenizer, pairs, cfg, 64, checkpoint_dir=state)
    monkeypatch.setattr(records, "ROOT", in_tmp / "fresh-clone")  # a new clone; the output root is the same
    resumed = reward_model_loop.train_reward_model(tiny_rm(seed=1), tokenizer, pairs, cfg, 64,
                                                   checkpoint_dir=records.state_dir(cpu, "rm_x"))
    assert resumed["step"] == first["step"] and resumed["train/loss"] == pytest.approx(first["train/loss"])


# ------------------------------------------------------------------------ a notebook whose inputs were not made here

def fake_record(root, profile, name, hardware="AMD EPYC, 2 CPU cores"):
    path = root / "results" / profile / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "hardware": hardware, "code_version": "abc123", "metrics": {},
                                **{k: None for k in records.REQUIRED if k != "metrics"}}))


def test_a_missing_record_names_the_notebook_that_writes_it(in_tmp):
    with pytest.raises(records.MissingRecordError, match=r"reinforce_rloo.json at profile 'full'.*notebook 03_reinforce "
                                                         r"has not run.*ALIGNLIB_RESULTS_DIR"):
        records.read_record("reinforce_rloo", "full")
    assert issubclass(records.MissingRecordError, FileNotFoundError)


def test_missing_earlier_records_are_replaced_by_the_published_ones_labelled_as_such(in_tmp, capsys):
    names = ["rm_scalar", "reinforce_ema"]
    for name in names:
        fake_record(in_tmp / "repo", "cpu", name)
    fake_record(in_tmp / "repo", "full", "rm_scalar", hardware="Tesla T4")  # notebook 02 ran, notebook 03 did not
    profile, found = records.records_here_or_published(names, "full")
    assert profile == "cpu" and {r["hardware"] for r in found.values()} == {"AMD EPYC, 2 CPU cores"}  # never a mix
    said = capsys.readouterr().out
    assert "notebook 03_reinforce has not run" in said and "PUBLISHED 'cpu' records" in said and "AMD EPYC" in said
    fake_record(in_tmp / "repo", "full", "reinforce_ema", hardware="Tesla T4")
    assert records.records_here_or_published(names, "full")[0] == "full"  # every record made here: those
    with pytest.raises(records.MissingRecordError):
        records.records_here_or_published(["reinforce_rloo"], "smoke")  # smoke tests the chain: nothing substituted


# ----------------------------------------------------------------- a reward model trained on other weights or data

@pytest.fixture
def saved_rm(tmp_path, tiny_rm, tokenizer, monkeypatch):
    """A tiny reward model saved with the offline weights' and the HH-RLHF data's names, and `machine_loads(source)`
    to make this machine's backbone come from `source` ("hub" or "gguf-q4_1")."""
    from conftest import tiny_base

    model = tiny_rm(seed=0)
    model.alignlib_source = "gguf-q4_1"
    models.save_reward_model(model, tmp_path / "rm", 64, data_source="offline:hh-rlhf-helpful-test")
    monkeypatch.delenv(models.MISMATCH_ENV, raising=False)

    def machine_loads(source):
        def backbone(num_labels):
            base = tiny_base(tokenizer, num_labels)
            base.alignlib_source = source
            return base
        monkeypatch.setattr(models, "load_reward_backbone", backbone)

    return tmp_path / "rm", machine_loads


def test_the_saved_reward_model_names_the_sources_it_was_trained_on(saved_rm):
    adapter, _ = saved_rm
    notes = models.reward_model_notes(adapter)
    assert (notes["model_source"], notes["data_source"], notes["num_labels"]) == ("gguf-q4_1", "offline:hh-rlhf-helpful-test", 1)


def test_a_reward_model_of_other_data_is_refused_with_what_to_do(saved_rm):
    adapter, machine_loads = saved_rm
    machine_loads("gguf-q4_1")
    assert models.load_reward_model(adapter, data_source="offline:hh-rlhf-helpful-test").alignlib_mismatch == {}
    with pytest.raises(models.RewardModelMismatchError, match=r"trained on offline:hh-rlhf-helpful-test, and this run "
                                                               r"uses hub:juyoungml/HelpSteer2-binarized.*notebook 02.*"
                                                               r"ALIGNLIB_ALLOW_RM_MISMATCH=1"):
        models.load_reward_model(adapter, data_source="hub:juyoungml/HelpSteer2-binarized")
    assert data.source_setting("offline:hh-rlhf-helpful-test") == "offline"  # the data it was trained on
    assert data.source_setting("hub:juyoungml/HelpSteer2-binarized") == "hub" and data.source_setting(None) == "auto"


def test_a_reward_model_of_other_weights_loads_with_a_warning_the_record_keeps(saved_rm):
    """Colab or a laptop online: hub weights, while the published reward model learned on the offline Q4_1 ones."""
    adapter, machine_loads = saved_rm
    machine_loads("hub")
    with pytest.warns(UserWarning, match=r"MISMATCHED REWARD MODEL.*'gguf-q4_1' weights, and this machine loads the 'hub'"):
        model = models.load_reward_model(adapter, data_source="offline:hh-rlhf-helpful-test")
    assert list(model.alignlib_mismatch) == ["model_source"]


def test_a_mismatched_reward_model_loads_only_when_asked_and_loudly(saved_rm, monkeypatch):
    adapter, machine_loads = saved_rm
    machine_loads("hub")
    monkeypatch.setenv(models.MISMATCH_ENV, "1")
    with pytest.warns(UserWarning, match="MISMATCHED REWARD MODEL"):
        model = models.load_reward_model(adapter, data_source="hub:juyoungml/HelpSteer2-binarized")
    assert sorted(model.alignlib_mismatch) == ["data_source", "model_source"]  # the run record keeps both


def test_a_reinforce_setup_records_what_its_reward_model_was_trained_on(saved_rm, monkeypatch, tokenizer, tiny_policy):
    from alignlib import evaluate

    adapter, _ = saved_rm
    tiny_policy.alignlib_source = "hub"
    monkeypatch.setattr(models, "load_policy", lambda: tiny_policy)
    monkeypatch.setattr(evaluate, "generate_for_eval", lambda policy, tok, prompts, cfg: {
        "texts": ["x"] * len(prompts), "tokens": [[5]] * len(prompts), "ended": [False] * len(prompts), "budget": 8})
    prefs = data.PreferenceData(toy_pairs()[:4], toy_pairs()[4:], "offline:hh-rlhf-helpful-test")
    setup = runs.reinforce_setup(config.get_profile("smoke"), tokenizer, lambda p, t: [0.0] * len(t), adapter, prefs)
    assert setup.reward_model_trained_on == {"model_source": "gguf-q4_1", "data_source": "offline:hh-rlhf-helpful-test"}
    assert list(setup.reward_model_mismatch) == ["model_source"]


def test_a_mac_runs_on_the_cpu_not_on_untested_mps(monkeypatch):
    import accelerate

    asked = {}
    monkeypatch.setattr(accelerate, "PartialState", lambda cpu: asked.setdefault("cpu", cpu))
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # Apple silicon
    machine.process_state()
    assert asked["cpu"] is True
    asked.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    machine.process_state()
    assert asked["cpu"] is False  # a CUDA GPU: accelerate places the process on it
