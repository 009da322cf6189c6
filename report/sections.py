"""Every generated section of README.md and docs/*.md, written from the run records.

    python -m report.sections [NAME ...]    # every section, or those named, from the published (cpu) records

A section is what stands between `<!-- NAME:start -->` and `<!-- NAME:end -->` in its file (SECTIONS); `splice`
replaces it. `make report` and each study's make target rewrite them all, `make mutants` and
`python -m report.timings` theirs. A record that does not exist yet leaves its part out.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from alignlib import verdicts
from alignlib.records import PUBLISHED
from report import ROOT, load
from report.build import NEEDED, code_versions, needed

# the full profile's records (the original settings) -> the command that makes each
FULL_COLUMN = {"rm_scalar": "python -m alignlib rm --publish",
               "rm_prob": "python -m alignlib rm --labels 10 --publish",
               "reinforce_ema": "python -m alignlib reinforce"}

RMS, POLICIES = [n for n in NEEDED if n.startswith("rm_")], [n for n in NEEDED if n.startswith("reinforce_")]
PRECISION = {"none": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}


def records(profile: str, names) -> dict[str, dict]:
    """The records of `names` that exist at `profile`, in that order."""
    found = {name: load(f"results/{profile}/{name}.json") for name in names}
    return {name: r for name, r in found.items() if r is not None}


def md_table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def ci(x, d: int = 3) -> str:
    return f"[{x[0]:.{d}f}, {x[1]:.{d}f}]"


def machine(record: dict) -> str:
    return record["hardware"].split(", torch")[0]


def grouped(named: dict[str, dict], key) -> str:
    """"<key>: `a`, `b`; <key>: `c`": the records grouped by `key(record)` ("<key> in every record": one group)."""
    groups: dict[str, list[str]] = {}
    for name, r in named.items():
        groups.setdefault(key(r), []).append(f"`{name}`")
    if len(groups) == 1:
        return f"{next(iter(groups))} in every record"
    return "; ".join(f"{k}: {', '.join(names)}" for k, names in groups.items())


def rm_and_policy_tables(rms: dict, runs: dict) -> list[str]:
    lines = []
    if rms:
        lines += md_table(["reward model", "val. accuracy [95% CI]", "val. loss", "training pairs", "tokens/s"], [
            [f"`{n}`", f"{m['val_accuracy']:.3f} {ci(m['val_accuracy_ci95'])}", f"{m['val_loss']:.3f}",
             m["train_pairs"], f"{m['train_tokens_per_s']:.0f}"] for n, m in ((n, r["metrics"]) for n, r in rms.items())])
        lines.append("")
    if runs:
        lines += md_table(["policy", "reward SFT → RL", "paired Δ [95% CI]", "win-rate", "KL to SFT",
                           "distinct-2 SFT → RL", "length SFT → RL", "s / iteration"], [
            [f"`{n}`", f"{m['reward_sft_mean']:.3f} → {m['reward_rl_mean']:.3f}",
             f"{m['reward_delta_mean']:+.3f} {ci(m['reward_delta_ci95'])}", f"{m['win_rate']:.1%}", f"{m['kl_to_sft']:.2f}",
             f"{m['distinct2_sft']:.3f} → {m['distinct2_rl']:.3f}", f"{m['length_sft']:.0f} → {m['length_rl']:.0f}",
             f"{m['sec_per_iter']:.1f}"] for n, m in ((n, r["metrics"]) for n, r in runs.items())])
        lines.append("")
    return lines


def cross_judging(comp: dict | None) -> list[str]:
    if comp is None:
        return []
    rows = []
    for name, label in comp["config"]["policies"].items():
        own = comp["config"]["trained_on"][name]
        other = "prob" if own == "scalar" else "scalar"
        m = {key.split("/", 1)[1]: v for key, v in comp["metrics"].items() if key.startswith(f"{name}/")}
        rows.append([label, f"{own} RM", f"{m[f'{own}/win_rate']:.1%}", f"{m[f'{other}/win_rate']:.1%}",
                     f"{m[f'{other}/reward_delta_mean']:+.3f} {ci(m[f'{other}/reward_delta_ci95'])}"])
    return md_table(["policy", "trained on", "win-rate, own judge", "win-rate, other judge",
                     "Δ other judge [95% CI]"], rows) + [
        "", "Cross-judging (notebook 05): each policy's held-out replies scored by the reward model it was not "
        "trained on (scalar RM ↔ E[p] of the probabilistic RM).", ""]


def seeds_line(seeds: dict | None) -> list[str]:
    if seeds is None:
        return ["Every row is one training run (seed 0); `make seeds` checks the rankings over seeds."]
    held = [f"`{r['a']}` − `{r['b']}` ({r['metric']})" for r in verdicts.rankings(seeds) if r["verdict"] == "holds"]
    return [f"Over training seeds {', '.join(map(str, seeds['seeds']))} (`make seeds`), {len(held)} of "
            f"{len(seeds['rankings'])} rankings hold: {', '.join(held) or 'none'}; the others are withdrawn "
            "([docs/studies.md](docs/studies.md))."]


def results(profile: str) -> str:
    """The README's results: the reward models, the policies, the cross-judging, where and how they were made."""
    rms, runs = records(profile, RMS), records(profile, POLICIES)
    lines = rm_and_policy_tables(rms, runs) + cross_judging(load(f"results/{profile}/comparison.json"))
    if not rms and not runs:
        return "No run record at this profile yet: run `make report`."
    made = rms | runs
    src = next(iter(made.values()))
    lines.append(f"Profile `{profile}`, model `{src['model_source']}`, data `{src['data_source']}`"
                 + (f", {next(iter(rms.values()))['metrics']['n_pairs']} validation pairs" if rms else "")
                 + (f", {next(iter(runs.values()))['metrics']['n_eval_prompts']} held-out prompts" if runs else "") + ".")
    data = load(f"results/{profile}/data.json")
    if data:
        d = data["metrics"]
        lines += ["", f"Data: {d['n_train'] + d['n_development'] + d['n_validation'] + d['n_dropped']} pairs read, "
                  f"{d['n_dropped']} malformed ones dropped (reasons in `data.json`), {d['n_train']} for training, "
                  f"{d['n_development']} for development (tuning), {d['n_validation']} for validation."]
    lines += ["", "Machines, as each record names them: " + grouped(made, machine) + ".",
              "", "Precision: " + grouped(made, lambda r: PRECISION.get(r["precision"], r["precision"]))
              + " (each record's `precision_reason` says why).",
              "", "Code (`code_version`): " + "; ".join(f"{c}: {len(n)} records" for c, n in code_versions(made).items())
              + ".", ""]
    return "\n".join(lines + seeds_line(load(f"results/{profile}/seeds.json")))


def test_cost() -> str:
    """`make test` on a fresh clone, from results/timings.json: the total and its phases."""
    t = load("results/timings.json")
    if t is None:
        return "not measured yet (`python -m report.timings`)"
    phases = ("unit tests", "smoke notebooks", "report from smoke records")
    seconds = {what: float(re.search(r" in ([0-9.]+)s", line).group(1))
               for what, line in zip(phases, t["pytest_summaries"])}
    studies = t["make_test_fresh_clone_s"] - t["setup_s"] - sum(seconds.values())
    parts = [f"setup {t['setup_s'] / 60:.1f}"] + [f"{what} {s / 60:.1f}" for what, s in seconds.items()]
    return (f"**{t['make_test_fresh_clone_s'] / 60:.1f} min** on {t['machine']} ({', '.join(parts)}, studies at "
            f"smoke {studies / 60:.1f} min; fresh clone, commit {t['commit']}, {t['measured']})")


def learner_cost() -> str:
    """Each notebook top to bottom with a learner's defaults on a fresh clone, from results/learner_path.json."""
    t = load("results/learner_path.json")
    if t is None:
        return "not measured yet (`python -m report.learner_path`)"
    parts = ", ".join(f"{name.split('_')[0]} {s / 60:.1f}" for name, s in t["seconds"].items())
    return (f"**{max(t['seconds'].values()) / 60:.1f} min** at most per notebook ({parts} min) on {t['machine']} "
            f"(profile `{t['profile']}`, fresh clone, commit {t['commit']}, {t['measured']})")


def report_cost(profile: str) -> str:
    """`make report` at `profile`: the sum of its notebooks' run records' `wall_time_s`, where all exist."""
    made = records(profile, needed(profile))
    if len(made) < len(needed(profile)):
        return f"not measured yet ({len(made)} of {len(needed(profile))} runs recorded in `results/{profile}/`)"
    hours = sum(r["wall_time_s"] for r in made.values()) / 3600
    peak = max(r["peak_memory_mb"] or 0 for r in made.values()) / 1024
    shared = " (GPU shared with other runs)" if any("shared_device" in r for r in made.values()) else ""
    return (f"**{hours:.1f} h** of runs{shared} on {'; '.join(dict.fromkeys(machine(r) for r in made.values()))} "
            f"(peak memory {peak:.1f} GB)")


def costs(profile: str) -> str:
    """The two commands' cost: measured on a CPU, and on a GPU where the records hold a measurement."""
    return "\n".join(md_table(["command", "CPU", "GPU"], [
        ["`make test`", test_cost(), "not measured yet"],
        ["the notebooks, as a learner runs them (long runs shown from their published records on a CPU)",
         learner_cost(), "trains every run (the default on a GPU): the runs' own costs below"],
        [f"`make report` (`{profile}` profile on a CPU, `full` on a GPU)", report_cost(profile), report_cost("full")]]) + [
        "", f"`make report`'s time adds up the `wall_time_s` of the {len(NEEDED)} run records of the notebooks (model "
        "loading between runs not counted), each on the machine its record names."])


def studies(profile: str) -> str:
    """The studies' summaries as far as they exist: the RM ablation, the rankings over seeds, over-optimisation."""
    out = []
    abl = load(f"results/{profile}/rm_ablation.json")
    if abl:
        rows = []
        for v in abl["variants"]:
            run = load(f"results/{profile}/rm_dev/{v['variant']}.json")
            lora = "all linear layers" if len(v["LoRA on"].split(", ")) == 7 else v["LoRA on"]
            diff = "-" if v["variant"] == "baseline" else f"{v['vs baseline']:+.3f} {ci(v['vs baseline 95% CI'])}"
            rows.append([v["variant"], v["train pairs"], lora, v["epochs"],
                         f"{v['dev accuracy']:.3f} {ci(v['dev accuracy 95% CI'])}", diff,
                         f"{run['wall_time_s'] / 60:.0f} min", f"{v['peak memory GB']:.1f} GB"])
        out += [f"Scalar RM ablation (`make rm-ablation`, profile `{profile}`), scored on "
                f"{abl['variants'][0]['dev pairs']} development pairs, never on validation; run times and memory on "
                f"{machine(run)}:", "", *md_table(["variant", "pairs", "LoRA on", "epochs", "dev accuracy (95% CI)",
                                                   "minus baseline (paired 95% CI)", "run time", "peak memory"], rows)]
        out += [""] + ([f"Not yet run: {', '.join(abl['missing'])}."] if abl["missing"] else [])
        if abl["chosen"]:
            out += [f"Chosen: **{abl['chosen']}**, by the rule: {abl['rule']}. The `cpu` profile trains it."]
    seeds = load(f"results/{profile}/seeds.json")
    if seeds and seeds["configs"]:
        out += ["", f"Reward gain over SFT across training seeds {', '.join(map(str, seeds['seeds']))} (`make seeds`), "
                "and each ranking the report makes, A minus B over seeds (two-sample t interval):", "", *md_table(
                    ["configuration", "gain per seed", "mean (95% CI over seeds)"],
                    [[n, ", ".join(f"{x:+.3f}" for x in c["per_seed"]["reward_delta_mean"]),
                      f"{c['across_seeds']['reward_delta_mean']['mean']:+.3f} "
                      f"{ci(c['across_seeds']['reward_delta_mean']['ci95'])}"] for n, c in seeds["configs"].items()]),
                "", *md_table(["A", "B", "metric", "A − B (95% CI)", "ranking"], [
                    [r["a"], r["b"], r["metric"], f"{r['diff']:+.3f} {ci(r['ci95'])}", r["verdict"]]
                    for r in verdicts.rankings(seeds)])]
    out += overoptimization(profile)
    return "\n".join(out) if out else "No study has run at this profile yet."


def overoptimization(profile: str) -> list[str]:
    summary = load(f"results/{profile}/overoptimization.json")
    said = verdicts.overoptimization(summary)
    if not said or not said["runs"]:
        return []
    trend = {"rising": "still rising at the end", "falls": "falls after its peak beyond noise",
             "within noise": "later points within noise of its peak"}
    return ["", "Over-optimisation (`make overoptimization`), last point of each run, and the judge's course:"] + [
        f"- {name}: iteration {r['last']['iteration']}, KL {r['last']['kl_to_sft']:.1f} nats, proxy gain "
        f"{r['last']['proxy_gain_sd']:+.2f} sd, judge gain {r['last']['judge_gain_sd']:+.2f} sd; judge "
        f"{trend[r['trend']]}" + ("" if summary["policies"][name]["complete"] else " (not complete)")
        for name, r in said["runs"].items()]


def full(profile: str) -> str:
    """The full profile's records (the original settings): what each gives and on which machine, and which are
    still to run."""
    have = records("full", FULL_COLUMN)
    if not have:
        return "No run of the `full` profile is recorded in `results/full/` yet."
    rows = []
    for name, r in have.items():
        m = r["metrics"]
        result = (f"validation accuracy {m['val_accuracy']:.3f} {ci(m['val_accuracy_ci95'])} after "
                  f"{r['config']['rm']['epochs']} epoch(s) on {m['train_pairs']} pairs" if name.startswith("rm_") else
                  f"reward gain over SFT {m['reward_delta_mean']:+.3f} {ci(m['reward_delta_ci95'])}, "
                  f"KL {m['kl_to_sft']:.1f} nats")
        shared = " (GPU shared with other runs)" if "shared_device" in r else ""
        rows.append([name, result, r["hardware"].split(", torch")[0], f"{r['wall_time_s'] / 60:.1f} min{shared}"])
    todo = [f"{n} (`{cmd} --profile full`)" for n, cmd in FULL_COLUMN.items() if n not in have]
    return "\n".join(["Runs of the `full` profile (the original settings, on the offline data and weights; "
                      "`results/full/`):", "", *md_table(["run", "result", "machine", "run time"], rows)]
                     + (["", f"Still to run: {', '.join(todo)}."] if todo else []))


BENCH_LABELS = {"rm_pairs_per_s_ratio_vs_trl": "reward-model training, pairs per second",
                "rm_tokens_per_s_ratio_vs_trl": "reward-model training, real tokens per second",
                "rm_peak_rss_ratio_vs_trl": "reward-model training, peak RSS",
                "policy_samples_per_s_ratio_vs_trl": "policy step, sampled replies per second (RLOO k=2 vs RLOOTrainer)",
                "policy_ema_samples_per_s_ratio_vs_trl": "policy step, sampled replies per second (EMA vs RLOOTrainer)",
                "policy_peak_rss_ratio_vs_trl": "policy step, peak RSS"}
BENCHES = {"`results/bench.json`": "results/bench.json",
           "the machine with native bf16 (`results/bench_native_bf16_cpu.json`)": "results/bench_native_bf16_cpu.json"}


def bench(profile: str) -> str:
    """alignlib against TRL from `make bench`'s records, one column per machine, and the aims they meet."""
    benches = {label: b for label, path in BENCHES.items() if (b := load(path))}
    if not benches:
        return "No benchmark record yet: run `make bench`."
    said = {label: verdicts.bench_verdicts(b) for label, b in benches.items()}
    cell = lambda r: f"{r['median']:.2f}x ({r['lo']:.2f}-{r['hi']:.2f}x)"
    rows = [[label, *(cell(s["ratios"][key]) for s in said.values())] for key, label in BENCH_LABELS.items()]
    rows += [["reward-model training, share of the matmul rate (alignlib / TRL)", *(
        f"{b['rm_matmul_fraction']:.1%} / {b['rm_matmul_fraction_trl']:.1%} of "
        f"{b['matmul_gflops'].get('used_dtype', 'bf16')}" for b in benches.values())],
             ["aims: policy step, RM training 1.5x TRL; 60% of the matmul rate",
              *(f"{s['policy']}; {s['rm']}; {s['matmul']}" for s in said.values())],
             ["precision (both libraries)", *(b["precision"].split(":")[0] for b in benches.values())],
             ["measured", *(f"{b['created'][:10]}, {b['environment']['hardware'].split(', torch')[0]}"
                            for b in benches.values())]]
    here, prof = load("results/bench.json"), load("results/speed_profile.json")
    took = [f"`make bench` took {(here['wall_time_s'] + prof['wall_time_s']) / 60:.0f} min on the machine of "
            "`results/bench.json`."] if here and prof else []
    return "\n".join(md_table(["alignlib / TRL (same work): ratio of medians (range over repeats)", *benches], rows)
                      + [""] + took)


def profile_tables(profile: str) -> str:
    """Where a reward-model step spends its time, and what each policy speed-up buys (results/speed_profile.json)."""
    p = load("results/speed_profile.json")
    if p is None:
        return "No profile record yet: run `make bench`."
    po, kv, n = p["policy_optimisations"], p["policy_optimisations"]["kv_cache_s"], p["policy_optimisations"]["nucleus_size"]
    steps = (("sampling the replies", "sampling_s"), ("nucleus for the gradient", "gradient_nucleus_s"),
             ("AdamW step, 135M parameters", "adamw_step_s"))
    rows = [[label, *(f"{t['median']:.2f} s ({name})" for name, t in po[key].items())] for label, key in steps]
    return "\n".join([
        f"Measured on the machine of `results/bench.json` ({machine(p['environment'])}, "
        f"{p['precision']['precision_reason']}). Where a reward-model training step spends its CPU time (torch "
        "profiler, `benchmarks/speed_profile.py`):", "",
        *md_table(["operations", "share"], [[k, f"{v:.0%}"] for k, v in p["time_split"].items()]), "",
        "Real tokens per second of the same loop: " + "; ".join(f"{v:.0f} with {k}" for k, v in p["tokens_per_s"].items())
        + ".", "", f"Speed-ups of the policy step, each against what it replaced ({po['prompts']} prompts, "
        f"{po['new_tokens']} new tokens; median seconds):", "", *md_table(["step", "before", "after"], rows), "",
        f"KV cache on this CPU: dynamic {kv['dynamic']['median']:.2f} s, static {kv['static']['median']:.2f} s (medians "
        f"of {po['kv_cache_pairs']['timed']} same-seed pairs in alternating order; dynamic faster in "
        f"{po['kv_cache_pairs']['dynamic_faster']}). The top-p nucleus held a median of {n['median']:.0f} tokens "
        f"(90th percentile {n['p90']:.0f}, max {n['max']:.0f}; {n['share_over_512']:.1%} of {n['positions']} "
        "positions over 512)."])


def mutants(profile: str) -> str:
    """The last `make mutants` (results/mutants.json): the score overall and per module."""
    s = load("results/mutants.json")
    if s is None:
        return "`make mutants` has not run yet."
    per_module = ", ".join(f"`{name}` not reached" if c["score"] is None else f"`{name}` {c['score']:.0%}" + (
        f" ({c['mutants'] - c['not checked']} of {c['mutants']} checked)" if c.get("not checked") else "")
        for name, c in s["modules"].items())
    stopped = "" if s["complete"] else (f" **Stopped before the end: {s['not_checked']} mutants not checked; the "
                                        "score covers the checked ones.**")
    return (f"Last `make mutants` (commit {s['code_version']}, {s['created'][:10]}){stopped} **{s['score']:.1%}** of "
            f"{s['mutants'] - s['not_checked']} checked mutants caught ({s['killed']} killed, {s['timeout']} by timeout; "
            f"{s['survived']} survived, {s['no_tests']} reached by no selected test). Per module: {per_module}.")


# section -> (the file it lives in, what writes it from a profile's records)
SECTIONS = {"costs": ("README.md", costs), "results": ("README.md", results),
            "studies": ("docs/studies.md", studies), "full": ("docs/studies.md", full),
            "bench": ("docs/speed.md", bench), "profile": ("docs/speed.md", profile_tables),
            "mutants": ("docs/mutation-testing.md", mutants)}


def splice(path: Path, name: str, body: str) -> None:
    """Replace what stands between `<!-- name:start -->` and `<!-- name:end -->` in `path` with `body`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"{path} needs one {start} and one {end} marker")
    head, rest = text.split(start)
    path.write_text(f"{head}{start}\n{body}\n{end}{rest.split(end)[1]}")


def update(names=None, profile: str = PUBLISHED) -> None:
    """Rewrite the sections `names` (default: all) from `profile`'s records."""
    for name in names or SECTIONS:
        file, write = SECTIONS[name]
        splice(ROOT / file, name, write(profile))


if __name__ == "__main__":
    update(sys.argv[1:])
    print("rewrote", ", ".join(sys.argv[1:] or SECTIONS))
