"""Write the README's results table from the run records (called by `make report`).

    python report/readme_table.py [profile]

Each table replaces whatever stands between its `<!-- name:start -->` and `<!-- name:end -->`
markers of README.md (`SECTIONS`); records that do not exist yet are left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "report"))
from build import FULL_COLUMN  # noqa: E402  (the full profile's records the report and the README show)


def load(profile: str, name: str) -> dict | None:
    path = ROOT / "results" / profile / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ci(x, d=3):
    return f"[{x[0]:.{d}f}, {x[1]:.{d}f}]"


def table(profile: str) -> str:
    lines = []
    rms = [(n, load(profile, n)) for n in ("rm_scalar", "rm_scalar_original_lr", "rm_prob", "rm_prob_beats")]
    rms = [(n, r) for n, r in rms if r]
    if rms:
        lines += ["| reward model | val. accuracy [95% CI] | val. loss | training pairs | tokens/s |",
                  "|---|---|---|---|---|"]
        for name, r in rms:
            m = r["metrics"]
            lines.append(f"| `{name}` | {m['val_accuracy']:.3f} {ci(m['val_accuracy_ci95'])} | {m['val_loss']:.3f} "
                         f"| {m['train_pairs']} | {m['train_tokens_per_s']:.0f} |")
        lines.append("")
    runs = [(n, load(profile, n)) for n in ("reinforce_ema", "reinforce_rloo", "reinforce_ema_kl",
                                            "reinforce_prob_expected", "reinforce_prob_sampled")]
    runs = [(n, r) for n, r in runs if r]
    if runs:
        lines += ["| policy | reward SFT → RL | paired Δ [95% CI] | win-rate | KL to SFT | distinct-2 SFT → RL "
                  "| length SFT → RL | s / iteration (machine: below) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in runs:
            m = r["metrics"]
            lines.append(
                f"| `{name}` | {m['reward_sft_mean']:.3f} → {m['reward_rl_mean']:.3f} | {m['reward_delta_mean']:+.3f} "
                f"{ci(m['reward_delta_ci95'])} | {m['win_rate']:.1%} | {m['kl_to_sft']:.2f} "
                f"| {m['distinct2_sft']:.3f} → {m['distinct2_rl']:.3f} | {m['length_sft']:.0f} → {m['length_rl']:.0f} "
                f"| {m['sec_per_iter']:.1f} |")
        lines.append("")
    comp = load(profile, "comparison")
    if comp:
        lines += ["| policy | trained on | win-rate, own judge | win-rate, other judge | Δ other judge [95% CI] |",
                  "|---|---|---|---|---|"]
        for name, label in comp["config"]["policies"].items():
            own = comp["config"]["trained_on"][name]
            other = "prob" if own == "scalar" else "scalar"
            m = lambda judge, key: comp["metrics"][f"{name}/{judge}/{key}"]
            lines.append(f"| {label} | {own} RM | {m(own, 'win_rate'):.1%} | {m(other, 'win_rate'):.1%} "
                         f"| {m(other, 'reward_delta_mean'):+.3f} {ci(m(other, 'reward_delta_ci95'))} |")
        lines += ["", "Cross-judging (notebook 05): each policy's held-out replies scored by the reward model it "
                  "was not trained on (scalar RM ↔ E[p] of the probabilistic RM).", ""]
    if rms or runs:
        src = (rms or runs)[0][1]
        parts = [f"Profile `{profile}`", f"model `{src['model_source']}`", f"data `{src['data_source']}`"]
        if rms:
            parts.append(f"{rms[0][1]['metrics']['n_pairs']} validation pairs")
        if runs:
            parts.append(f"{runs[0][1]['metrics']['n_eval_prompts']} held-out prompts")
        lines.append(", ".join(parts) + ".")
        lines += ["", "Where and in what precision each record was made: " + made_on(rms + runs) + "."]
        data = load(profile, "data")
        if data:
            d = data["metrics"]
            dev = d.get("n_development", 0)  # records before the development split lack it
            lines += ["", f"Data: {d['n_train'] + dev + d['n_validation'] + d['n_dropped']} pairs read, {d['n_dropped']} "
                      f"malformed ones dropped and counted (reasons in `data.json`), {d['n_train']} for training, "
                      + (f"{dev} for development (tuning) and " if dev else "") + f"{d['n_validation']} for validation."]
        versions: dict[str, list[str]] = {}
        for name, r in rms + runs:
            versions.setdefault(r.get("code_version", "not recorded (made before records carried it)"), []).append(name)
        lines += ["", "Code that made each record: " + "; ".join(
            f"{v}: " + ", ".join(f"`{n}`" for n in names) for v, names in versions.items()) + "."]
    return "\n".join(lines)


PRECISION_NAMES = {"none": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}


def made_on(named_records: list[tuple[str, dict]]) -> str:
    """The records grouped by machine and precision: "<hardware>, <precision> (<why>): `a`, `b`; ..."
    (a re-execution that spans machines leaves records of both in one table)."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, r in named_records:
        key = (r["hardware"], r.get("precision", "not recorded"), r.get("precision_reason", "not recorded"))
        groups.setdefault(key, []).append(name)
    return "; ".join(f"{hw}, {precision_text(p, why)}: " + ", ".join(f"`{n}`" for n in names)
                     for (hw, p, why), names in groups.items())


def precision_text(precision: str, why: str) -> str:
    """A record's precision as the README names it: "float32 (<precision_reason>)"."""
    return f"{PRECISION_NAMES.get(precision, precision)} ({why})"


BENCHES = {"the machine of `results/bench.json`": "bench.json",
           "the machine with native bf16 that made the first records (`results/bench_native_bf16_cpu.json`)":
               "bench_native_bf16_cpu.json"}


def bench_table() -> str:
    """alignlib vs TRL from `make bench`'s records: this machine's and that of the machine with native bf16."""
    benches = {label: json.loads((ROOT / "results" / name).read_text())
               for label, name in BENCHES.items() if (ROOT / "results" / name).exists()}
    if not benches:
        return "No benchmark record yet: run `make bench`."

    def cell(b, group, a_name, t_name, key, ratio_key):  # ratio of the medians, and the range the repeats allow
        a, t = b[group][a_name][key], b[group][t_name][key]
        return f"{b[ratio_key]:.2f}x ({a['min'] / t['max']:.2f}-{a['max'] / t['min']:.2f}x)"

    rows = [("reward-model training, pairs per second", "reward_model_training", "alignlib", "trl", "pairs_per_s",
             "rm_pairs_per_s_ratio_vs_trl"),
            ("reward-model training, real tokens per second", "reward_model_training", "alignlib", "trl", "tokens_per_s",
             "rm_tokens_per_s_ratio_vs_trl"),
            ("reward-model training, peak RSS", "reward_model_training", "alignlib", "trl", "peak_rss_mb",
             "rm_peak_rss_ratio_vs_trl"),
            ("policy step, sampled replies per second (RLOO k=2 vs RLOOTrainer)", "policy_optimisation",
             "alignlib_rloo", "trl_rloo", "samples_per_s", "policy_samples_per_s_ratio_vs_trl"),
            ("policy step, sampled replies per second (EMA vs RLOOTrainer)", "policy_optimisation", "alignlib_ema",
             "trl_rloo", "samples_per_s", "policy_ema_samples_per_s_ratio_vs_trl"),
            ("policy step, peak RSS", "policy_optimisation", "alignlib_rloo", "trl_rloo", "peak_rss_mb",
             "policy_peak_rss_ratio_vs_trl")]
    lines = ["| alignlib / TRL (same work): ratio of medians (range over repeats) | "
             + " | ".join(benches) + " |", "|---" * (len(benches) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(b, *keys) for b in benches.values()) + " |" for label, *keys in rows]
    lines.append("| reward-model training, share of the matmul rate (alignlib / TRL) | " + " | ".join(
        f"{b['rm_matmul_fraction']:.1%} / {b['rm_matmul_fraction_trl']:.1%} of "
        f"{b['matmul_gflops'].get('used_dtype', 'bf16')}" for b in benches.values()) + " |")
    lines.append("| precision (both libraries) | " + " | ".join(b["precision"].split(":")[0] for b in benches.values())
                 + " |")
    lines.append("| measured | " + " | ".join(f"{b['created'][:10]}, {b['environment']['hardware'].split(', torch')[0]}"
                                             for b in benches.values()) + " |")
    b = next(iter(benches.values()))
    prof = ROOT / "results" / "speed_profile.json"
    minutes = b["wall_time_s"] / 60 + (json.loads(prof.read_text())["wall_time_s"] / 60 if prof.exists() else 0)
    return "\n".join(lines) + (
        f"\n\nBoth libraries run on the CPU. `make bench` took {minutes:.0f} min on the machine of `results/bench.json`. Every raw "
        "figure, its spread over repeats and the exact settings of both libraries are in the records.")


def profile_tables() -> str:
    """Where an RM step spends its time, and each policy speed-up, from results/speed_profile.json."""
    path = ROOT / "results" / "speed_profile.json"
    if not path.exists():
        return "No profile record yet: run `make bench`."
    p = json.loads(path.read_text())
    where = f"{p['environment']['hardware'].split(', torch')[0]}, {p['precision']['precision_reason']}"
    lines = [f"Measured on the machine of `results/bench.json` ({where}); the machine with native bf16 that made the first records has "
             "its own profile in `results/speed_profile_native_bf16_cpu.json`, and the report shows both.", "",
             "Where a reward-model training step spends its CPU time (torch profiler, `benchmarks/speed_profile.py`):", "",
             "| operations | share |", "|---|---|"]
    lines += [f"| {group} | {share:.0%} |" for group, share in p["time_split"].items()]
    t = p["tokens_per_s"]
    lines += ["", "Real tokens per second of the same loop: " + "; ".join(f"{v:.0f} with {k}" for k, v in t.items()) + ".",
              "", "Speed-ups of the policy step, each against what it replaced "
              f"({p['policy_optimisations']['prompts']} prompts, {p['policy_optimisations']['new_tokens']} new tokens; "
              "median seconds):", "", "| step | before | after |", "|---|---|---|"]
    po = p["policy_optimisations"]
    for label, key in (("sampling the replies", "sampling_s"), ("nucleus for the gradient", "gradient_nucleus_s"),
                       ("AdamW step, 135M parameters", "adamw_step_s")):
        (old_name, old), (new_name, new) = po[key].items()
        lines.append(f"| {label} | {old['median']:.2f} s ({old_name}) | {new['median']:.2f} s ({new_name}) |")
    kv, pairs = po["kv_cache_s"], po["kv_cache_pairs"]
    lines += ["", f"KV cache on this CPU: dynamic {kv['dynamic']['median']:.2f} s, static {kv['static']['median']:.2f} s "
              f"(medians of {pairs['timed']} same-seed pairs in alternating order; dynamic faster in "
              f"{pairs['dynamic_faster']}); the CPU keeps the dynamic cache, a GPU takes the static one with its compiled "
              "decoding step."]
    n = po["nucleus_size"]
    lines += ["", f"The top-p nucleus held a median of {n['median']:.0f} tokens (90th percentile {n['p90']:.0f}, "
              f"max {n['max']:.0f}; {n['share_over_512']:.1%} of {n['positions']} positions over 512)."]
    return "\n".join(lines)


# the records each notebook writes. Notebook 02 writes rm_scalar and, except at the full profile,
# rm_scalar_original_lr; in records made before runs.reward_model_run (no "before_training" field), rm_scalar's
# wall time covers the whole notebook, the original-lr run included, which must then not be counted twice.
NOTEBOOK_RECORDS = {"01_data": ["data"], "02_scalar_reward_model": ["rm_scalar", "rm_scalar_original_lr"],
                    "03_reinforce": ["reinforce_ema", "reinforce_rloo", "reinforce_ema_kl"],
                    "04_probabilistic_reward_model": ["rm_prob", "rm_prob_beats", "reinforce_prob_expected",
                                                      "reinforce_prob_sampled"],
                    "05_comparison": ["comparison"]}


# the two machines the cpu profile has run on: make bench's records of each (speed profile and matrix products)
MACHINES = {"native": ("speed_profile_native_bf16_cpu.json", "bench_native_bf16_cpu.json"),
            "here": ("speed_profile.json", "bench.json")}
# a REINFORCE record of the native-bf16 machine kept apart from the re-runs: its seconds per iteration
NATIVE_ITERATION = ROOT / "results" / "cpu" / "after_speedups" / "reinforce_ema.json"


def machine_rates() -> dict | None:
    """Per machine ("native": the 2-core CPU with native bf16 that made the first records; "here": the one of
    the last `make bench`): its hardware string, the reward-model loop's real tokens/s in the profile's
    precision (make bench's speed profile, LoRA dropout 0.05, SDPA) and the seconds per REINFORCE iteration
    (8 prompts, 96 new tokens). None while a record is missing."""
    out = {}
    for machine, (profile_name, bench_name) in MACHINES.items():
        paths = [ROOT / "results" / n for n in (profile_name, bench_name)]
        if not all(p.exists() for p in paths) or not NATIVE_ITERATION.exists():
            return None
        prof, bench = (json.loads(p.read_text()) for p in paths)
        rm_key = next(k for k in prof["tokens_per_s"] if "sdpa" in k and k.endswith("0.05") and "forced" not in k)
        iteration = (prof["reinforce_iteration"]["sec_iteration"]["median"] if "reinforce_iteration" in prof
                     else json.loads(NATIVE_ITERATION.read_text())["metrics"]["sec_per_iter"])
        out[machine] = {"hardware": prof["environment"]["hardware"], "rm_tokens_per_s": prof["tokens_per_s"][rm_key],
                        "sec_per_iter": iteration, "prof": prof, "bench": bench}
    return out


def as_minutes(seconds: float) -> str:
    """A wall time for the costs table: whole minutes, and "<1 min" rather than a misleading "0 min"."""
    whole = f"{seconds / 60:.0f}"
    return "<1 min" if whole == "0" else f"{whole} min"


def costs_table(profile: str = "cpu") -> str:
    """What the cpu profile's notebooks cost on the machines it has run on.

    Each notebook's time adds up its records' `wall_time_s`. A record counts as it is on the machine that made
    it (its "hardware") and is projected to the other `make bench` machine by the ratio of the two machines'
    rates (`machine_rates`: reward-model records and the comparison by the reward-model loop's tokens/s,
    REINFORCE records by the seconds per iteration). A cell says whether it was recorded, projected, or both.
    A machine without `make bench` records gets a column of what was recorded on it, and nothing is projected
    to or from it: a cell that would need that says "–".
    """
    recs = {name: load(profile, name) for names in NOTEBOOK_RECORDS.values() for name in names}
    rates = machine_rates()
    if not all(recs.values()) or rates is None:
        return "Not all records exist yet: run `make report` and `make bench`."
    by_hardware = {r["hardware"]: m for m, r in rates.items()}
    machine_of = lambda name: by_hardware.get(recs[name]["hardware"], recs[name]["hardware"])
    others = sorted({machine_of(n) for n in recs} - set(rates))
    columns = ["native", "here", *others]

    def scale(name: str, made_on: str, to: str) -> float | None:
        if made_on == to or name == "data":
            return 1.0
        if made_on not in rates or to not in rates:
            return None
        if name.startswith("reinforce"):
            return rates[to]["sec_per_iter"] / rates[made_on]["sec_per_iter"]
        return rates[made_on]["rm_tokens_per_s"] / rates[to]["rm_tokens_per_s"]

    native, here = rates["native"], rates["here"]
    made_there = lambda hw: [recs[n] for n in recs if machine_of(n) == hw]
    iteration = lambda hw: next((f"{r['metrics']['sec_per_iter']:.1f} (a notebook run)" for r in made_there(hw)
                                 if "sec_per_iter" in r.get("metrics", {})), "–")
    gemm = lambda m: m["bench"]["matmul_gflops"]  # measured by make bench beside its runs
    rcfg = recs["reinforce_ema"]["config"]["reinforce"]
    rows = [("`cpu` profile", "2-core x86_64 with native bf16 (made the first records)",
             f"{here['hardware'].split(', torch')[0]} (`make bench` here)",
             *(f"{hw.split(', torch')[0]} (no `make bench`)" for hw in others)),
            ("precision", "bf16 autocast (the profile's setting then)", here["prof"]["precision"]["precision_reason"],
             *(precision_text(r.get("precision", "not recorded"), r.get("precision_reason", "not recorded"))
               for r in (made_there(hw)[0] for hw in others))),
            ("matrix product, GFLOP/s (2048³, `make bench`)", f"fp32 {gemm(native)['fp32']:.0f}, bf16 "
             f"{gemm(native)['bf16']:.0f}", f"fp32 {gemm(here)['fp32']:.0f}, bf16 "
             f"{here['prof']['precision_probe_gflops']['bf16']:.1f} (probe shape)", *("–" for _ in others)),
            ("reward-model training loop, real tokens/s (`make bench`)", f"{native['rm_tokens_per_s']:.0f}",
             f"{here['rm_tokens_per_s']:.0f}", *("–" for _ in others)),
            (f"REINFORCE, s per iteration ({rcfg['prompts_per_iter']} prompts, {rcfg['max_new_tokens']} new tokens)",
             f"{native['sec_per_iter']:.1f}", f"{here['sec_per_iter']:.1f}", *(iteration(hw) for hw in others))]
    if "before_training" not in recs["rm_scalar"]:  # an older record: its wall time holds the original-lr run
        recs["rm_scalar_original_lr"] = {**recs["rm_scalar_original_lr"], "wall_time_s": 0.0}
    totals = {m: [] for m in columns}  # seconds per notebook; None where it cannot be projected
    for nb, names in NOTEBOOK_RECORDS.items():
        cells = []
        for machine in columns:
            factors = [scale(n, machine_of(n), machine) for n in names]
            mine = [n for n in names if machine_of(n) == machine]
            if None in factors:
                totals[machine].append(None)
                cells.append(f"– ({len(mine)} of {len(names)} runs made here)" if mine else "–")
                continue
            seconds = sum(recs[n]["wall_time_s"] * f for n, f in zip(names, factors))
            totals[machine].append(seconds)
            how = ("recorded" if len(mine) == len(names) else "projected" if not mine
                   else f"{len(mine)} of {len(names)} runs recorded, the rest projected")
            peak = f", peak memory {max(recs[n]['peak_memory_mb'] for n in mine) / 1024:.1f} GB" if mine else ""
            cells.append(f"{as_minutes(seconds)} ({how}{peak})")
        rows.append((f"notebook {nb}", *cells))
    rows.append(("all notebooks (`make report`)", *("–" if None in totals[m] else as_minutes(sum(totals[m]))
                                                   for m in columns)))
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|---" * len(columns) + "|---|")
    return "\n".join(lines) + (
        "\n\nEach notebook's time adds up the `wall_time_s` of its run records (model loading between runs excluded), "
        "as recorded on the machine that made them; on the other `make bench` machine it is projected by the ratio "
        "of the two machines' rates (`report/readme_table.py`, `machine_rates`): projections are estimates, not "
        "runs. A machine without `make bench` records shows only what was recorded on it, and nothing is projected "
        "to or from it (\"–\"). Peak memory is the notebook process's peak resident memory, where it was recorded. "
        "Each `make bench` machine is described by its own records (`results/bench.json` and "
        "`results/speed_profile.json` here; `results/bench_native_bf16_cpu.json` and "
        "`results/speed_profile_native_bf16_cpu.json` for the machine with native bf16).")


def studies_tables(profile: str = "cpu") -> str:
    """The studies' summaries (alignlib/studies.py) as far as they exist: the RM ablation on the development pairs
    with each variant's cost, the across-seed statistics and rankings, and the over-optimisation points' ends."""
    out = []
    abl = load(profile, "rm_ablation")
    if abl:
        out += [f"Scalar RM ablation (`make rm-ablation`, profile `{profile}`), scored on "
                f"{abl['variants'][0]['dev pairs']} development pairs, never on validation:", "",
                "| variant | pairs | LoRA on | epochs | dev accuracy (95% CI) | minus baseline (paired 95% CI) "
                "| run time | peak memory |", "|---|---|---|---|---|---|---|---|"]
        for v in abl["variants"]:
            r = load(profile, f"rm_dev/{v['variant']}")  # the whole run's time, beside the summary's training time
            lora = "all linear layers" if len(v["LoRA on"].split(", ")) == 7 else v["LoRA on"]
            diff = "-" if v["variant"] == "baseline" else f"{v['vs baseline']:+.3f} {ci(v['vs baseline 95% CI'])}"
            out.append(f"| {v['variant']} | {v['train pairs']} | {lora} | {v['epochs']} | {v['dev accuracy']:.3f} "
                       f"{ci(v['dev accuracy 95% CI'])} | {diff} | {r['wall_time_s'] / 60:.0f} min | "
                       f"{v['peak memory GB']:.1f} GB |")
        out += ["", f"Run times and memory on {r['hardware']}." + (f" Not yet run: {', '.join(abl['missing'])}." if abl["missing"] else "")]
        if abl.get("chosen"):
            out += ["", f"Chosen: **{abl['chosen']}**, by the rule of `studies.CHOICE_RULE`: {abl['rule']}. The `cpu` "
                    "profile trains it (`alignlib/config.py`; a test checks that the two agree)."]
    seeds = load(profile, "seeds")
    if seeds and seeds["configs"]:
        out += ["", f"Across training seeds {', '.join(map(str, seeds['seeds']))} (`make seeds`): reward gain over SFT, "
                "mean and 95% t-interval over seeds:", "", "| configuration | gain per seed | mean (95% CI over seeds) |",
                "|---|---|---|"]
        for name, c in seeds["configs"].items():
            a = c["across_seeds"]["reward_delta_mean"]
            out.append(f"| {name} | {', '.join(f'{x:+.3f}' for x in c['per_seed']['reward_delta_mean'])} | "
                       f"{a['mean']:+.3f} {ci(a['ci95'])} |")
        held = [f"{r['a']} - {r['b']} ({r['metric']})" for r in seeds["rankings"] if r["holds"]]
        out += ["", "Rankings that hold over seeds: " + (", ".join(held) if held else "none") + "."]
    overopt = load(profile, "overoptimization")
    if overopt and overopt["policies"]:
        out += ["", "Over-optimisation (`make overoptimization`), last point of each run:"]
        for name, run in overopt["policies"].items():
            last = run["points"][-1]
            out.append(f"- {name}: iteration {last['iteration']}, KL {last['kl_to_sft']:.1f} nats, proxy gain "
                       f"{last['proxy_gain_sd']:+.2f} sd, judge gain {last['judge_gain_sd']:+.2f} sd"
                       + ("" if run["complete"] else " (not complete)"))
    return "\n".join(out) if out else "No study has run at this profile yet."


def full_profile_runs(profile: str = "cpu") -> str:
    """The full profile's records in results/full/ (GPU runs): what each gives and on which GPU, and which are still to run."""
    have = {n: r for n in FULL_COLUMN if (r := load("full", n))}
    if not have:
        return "No run of the `full` profile is recorded in `results/full/` yet, so this README gives no GPU figures."
    lines = ["Runs of the `full` profile (the original settings, on the offline data and weights; `results/full/`):", "",
             "| run | result | GPU | run time |", "|---|---|---|---|"]
    for name, r in have.items():
        m = r["metrics"]
        result = (f"validation accuracy {m['val_accuracy']:.3f} {ci(m['val_accuracy_ci95'])} after "
                  f"{r['config']['rm']['epochs']} epoch(s) on {m['train_pairs']} pairs" if name.startswith("rm_") else
                  f"reward gain over SFT {m['reward_delta_mean']:+.3f} {ci(m['reward_delta_ci95'])}, KL {m['kl_to_sft']:.1f} nats")
        shared = " (GPU shared with other runs)" if "shared_device" in r else ""
        lines.append(f"| {name} | {result} | {r['hardware'].split(',')[0]} | {r['wall_time_s'] / 60:.1f} min{shared} |")
    todo = [f"{n} (`ALIGNLIB_PROFILE=full {cmd}`)" for n, cmd in FULL_COLUMN.items() if n not in have]
    return "\n".join(lines + ([""] + [f"Still to run on a GPU: {', '.join(todo)}."] if todo else []))


def replace_between(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"README.md lacks the {start} / {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


# README section (between <!-- name:start --> and <!-- name:end -->) -> what writes it, from a profile's records
SECTIONS = {"results": table, "bench": lambda profile: bench_table(), "profile": lambda profile: profile_tables(),
            "costs": lambda profile: costs_table(), "studies": studies_tables, "full": full_profile_runs}


def update_readme(profile: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, write in SECTIONS.items():
        text = replace_between(text, f"<!-- {name}:start -->", f"<!-- {name}:end -->", write(profile))
    readme.write_text(text)


if __name__ == "__main__":
    update_readme(sys.argv[1] if len(sys.argv) > 1 else "cpu")
    print("README.md results table updated")
