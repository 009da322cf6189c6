"""The README's cost table: each notebook's time as recorded on the machine that made its runs, and projected
to the other machine by the rates `make bench` measured on both; a machine without `make bench` records shows
only what it recorded (report/readme_table.py)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "report"))

import readme_table  # noqa: E402

NATIVE, HERE = "x86_64, 2 CPU cores", "AMD EPYC (x86_64, AVX2), 2 CPU cores"


def write(root, name, obj):
    path = root / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def machine(root, hardware, prof_name, bench_name, tokens_per_s, sec_per_iter=None):
    prof = {"environment": {"hardware": hardware}, "tokens_per_s": {"attention sdpa, LoRA dropout 0.05": tokens_per_s},
            "precision": {"precision_reason": "measured"}, "precision_probe_gflops": {"bf16": 1.0}}
    if sec_per_iter:
        prof["reinforce_iteration"] = {"sec_iteration": {"median": sec_per_iter}}
    write(root, prof_name, prof)
    write(root, bench_name, {"matmul_gflops": {"fp32": 100.0, "bf16": 400.0}})


def test_each_notebook_is_recorded_where_its_runs_ran_and_projected_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_table, "ROOT", tmp_path)
    monkeypatch.setattr(readme_table, "NATIVE_ITERATION", tmp_path / "results/cpu/after_speedups/reinforce_ema.json")
    machine(tmp_path, NATIVE, "speed_profile_native_bf16_cpu.json", "bench_native_bf16_cpu.json", 400.0)
    machine(tmp_path, HERE, "speed_profile.json", "bench.json", 100.0, sec_per_iter=30.0)
    write(tmp_path, "cpu/after_speedups/reinforce_ema.json", {"metrics": {"sec_per_iter": 10.0}})
    here = {"data", "rm_scalar", "rm_scalar_original_lr", "reinforce_ema"}  # 02 re-run here, 03 half-way
    for names in readme_table.NOTEBOOK_RECORDS.values():
        for name in names:
            write(tmp_path, f"cpu/{name}.json", {
                "hardware": f"{HERE if name in here else NATIVE}", "wall_time_s": 600.0, "peak_memory_mb": 1024.0,
                "before_training": {}, "config": {"reinforce": {"prompts_per_iter": 8, "max_new_tokens": 96}}})
    rows = {line.split(" | ")[0].removeprefix("| notebook "): line for line in readme_table.costs_table().splitlines()
            if line.startswith("| notebook")}
    # two RMs of 10 min each made here, where the RM loop runs 4x slower than on the native machine
    assert "| 5 min (projected) | 20 min (recorded, peak memory 1.0 GB) |" in rows["02_scalar_reward_model"]
    # one REINFORCE run made here (30 s per iteration against 10), two on the native machine
    assert ("| 23 min (2 of 3 runs recorded, the rest projected, peak memory 1.0 GB) "
            "| 70 min (1 of 3 runs recorded, the rest projected, peak memory 1.0 GB) |") in rows["03_reinforce"]
    # a machine without make bench records: its own column of what it recorded, nothing projected to or from it
    write(tmp_path, "cpu/comparison.json", {"hardware": "a GPU", "wall_time_s": 120.0, "peak_memory_mb": 2048.0,
                                            "precision": "bf16", "precision_reason": "bf16 on the GPU"})
    lines = readme_table.costs_table().splitlines()
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in lines if line.startswith("| ")}
    assert rows["`cpu` profile"].endswith("| a GPU (no `make bench`) |") and lines[1] == "|---|---|---|---|"
    assert rows["precision"].endswith("| bfloat16 autocast (bf16 on the GPU) |")
    assert rows["notebook 05_comparison"].endswith("| – | – | 2 min (recorded, peak memory 2.0 GB) |")
    assert rows["notebook 02_scalar_reward_model"].endswith("| 5 min (projected) | 20 min (recorded, peak memory "
                                                            "1.0 GB) | – |")
    assert rows["all notebooks (`make report`)"].endswith("| – | – | – |")  # no machine ran or projects them all


def test_the_results_table_names_each_records_machine_and_precision():
    """Mid-re-execution, one table holds records of two machines: each is named with its own precision."""
    recs = [("rm_scalar", {"hardware": HERE, "precision": "none", "precision_reason": "no native bf16"}),
            ("rm_prob", {"hardware": NATIVE, "precision": "bf16", "precision_reason": "fixed by the profile"}),
            ("reinforce_ema", {"hardware": NATIVE, "precision": "bf16", "precision_reason": "fixed by the profile"})]
    assert readme_table.made_on(recs) == (
        f"{HERE}, float32 (no native bf16): `rm_scalar`; "
        f"{NATIVE}, bfloat16 autocast (fixed by the profile): `rm_prob`, `reinforce_ema`")


def test_a_notebook_under_half_a_minute_reads_as_under_a_minute_not_zero():
    assert readme_table.as_minutes(13.0) == "<1 min"
    assert readme_table.as_minutes(30.0) == "<1 min"  # half a minute rounds to 0: never print "0 min"
    assert readme_table.as_minutes(31.0) == "1 min"
    assert readme_table.as_minutes(242 * 60) == "242 min"
