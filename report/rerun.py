"""Every `cpu` record again with the code of this commit, in parts, over as many sessions as it takes.

    python -m report.rerun          # run the steps not done yet, in order; stop it any time, start it again
    python -m report.rerun --plan   # what is done, what is left, and the hours each part took (no run)
    python -m report.rerun --save-state   # before a session ends: pack the SFT replies and unfinished RMs to commit
    python -m report.rerun --step overoptimization   # only the named steps (no final report)

The steps, in order: the SFT replies' lengths at the evaluation's budget; notebooks 01 to 05 executed in place at
`cpu` with every long run trained (ALIGNLIB_TRAIN=1); the seeds study; the over-optimisation study; the original
REINFORCE settings (the `full` profile's run, `reinforce_ema`, on this machine when no GPU ran it); and last the
studies' summaries made again from their records and `make report REUSE=1`, which executes every notebook again
from the records (nothing trains) and builds the report and the README's sections. The scalar reward model's
ablation is not run again: its settings did not change (docs/studies.md).

A step is done when every record it writes was made here by this code (`records.code_version`, committed). A step
that stops, because a session ended, continues the next time: the notebooks with ALIGNLIB_REUSE_RUNS=1 take the
finished runs from their records, the studies skip them, and a run that was cut off resumes from its checkpoint.
Every run computes in float32, whichever CPU a session gets (ALIGNLIB_AMP=none). The ledger, results/rerun.json,
says for each part of each step when it ran, on which machine and for how long (written every minute, so a part
cut off by the end of a session keeps its time); each run's own record says how much of the CPUs other work took
while it trained (`others_cpu_share_train`). Output goes to logs/rerun_<step>.log.

Checkpoints are git-ignored, and a session may start on a fresh clone. `--save-state` packs what an unfinished run
needs to continue (the newest checkpoint of each reward model not yet recorded by this code, and the cached SFT
replies) into results/rerun_state.tar, to be committed before the session ends; the next `python -m report.rerun`
unpacks whatever of it this machine lacks. A policy's checkpoint is too large to commit (1.5 GiB), so a session that
may end on a fresh clone stops the re-run between REINFORCE runs. The final step deletes the file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from alignlib import records, summaries
from alignlib.machine import hardware
from alignlib.summaries import OVEROPT_DIR, SEEDED_RUNS, SEEDS_DIR
from report import ROOT

LEDGER = ROOT / "results" / "rerun.json"
STATE = ROOT / "results" / "rerun_state.tar"
CHECKPOINTS = ROOT / "checkpoints"
PACK_LIMIT_MB = 64  # a reward model's LoRA checkpoint is ~10 MiB; a policy's, whole weights and optimizer, 1.5 GiB
LOGS = ROOT / "logs"
PY = str(ROOT / ".venv" / "bin" / "python")
HEARTBEAT_S = 60


@dataclass
class Step:
    name: str
    command: list[str]
    writes: list[tuple[str, str]] = field(default_factory=list)  # (profile, record name)
    complete_flag: bool = False  # the records say metrics.complete (the over-optimisation runs, written per point)


def notebook(name: str, writes: list[str]) -> Step:
    path = f"notebooks/{name}.ipynb"
    return Step(name, ["make", "report", "REUSE=1", f"NOTEBOOKS={path}", "SKIP_BUILD=1"], [("cpu", w) for w in writes])


STEPS = [
    Step("sft_lengths", [PY, "-m", "alignlib", "sft-lengths", "--profile", "cpu"], [("cpu", "sft_reply_lengths")]),
    notebook("01_data", ["data"]),
    notebook("02_scalar_reward_model", ["rm_scalar", "rm_scalar_original_lr"]),
    notebook("03_reinforce", ["reinforce_ema", "reinforce_none", "reinforce_rloo", "reinforce_ema_kl",
                              "reinforce_ema_original_lr"]),
    notebook("04_probabilistic_reward_model", ["rm_prob", "rm_prob_beats", "reinforce_prob_expected",
                                               "reinforce_prob_sampled"]),
    notebook("05_comparison", ["comparison"]),
    Step("seeds", [PY, "-m", "alignlib", "seeds", "--profile", "cpu"],
         [("cpu", f"{SEEDS_DIR}/{base}_seed{s}") for base in SEEDED_RUNS for s in (1, 2)]),
    Step("overoptimization", [PY, "-m", "alignlib", "overoptimization", "--profile", "cpu"],
         [("cpu", f"{OVEROPT_DIR}/{n}") for n in ("rm_proxy", "rm_judge", "reinforce_ema", "reinforce_ema_kl")],
         complete_flag=True),
    Step("original_settings", [PY, "-m", "alignlib", "reinforce", "--profile", "full"], [("full", "reinforce_ema")]),
]
FINAL = Step("report", ["make", "report", "REUSE=1"])


def recorded_whole(record: dict | None, version: str, in_parts: bool = True) -> bool:
    """Whether `record` was made by code `version` and, where it is written in parts (`in_parts`, the
    over-optimisation runs after each point), says metrics.complete."""
    return (record is not None and record.get("code_version") == version
            and (not in_parts or record.get("metrics", {}).get("complete", True)))


def missing(step: Step, version: str) -> list[str]:
    """The records of `step` not yet made here by code `version` (complete, where the step writes them in parts)."""
    out = []
    for profile, name in step.writes:
        if not recorded_whole(records.made_here(name, profile), version, step.complete_flag):
            out.append(f"{profile}/{name}")
    return out


def head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def read_ledger(version: str) -> dict:
    ledger = json.loads(LEDGER.read_text()) if LEDGER.exists() else {}
    if ledger.get("code_version") != version:  # another code version: its parts are not this re-run's
        ledger = {"code_version": version, "steps": {}}
    return ledger


def write_ledger(ledger: dict) -> None:
    LEDGER.write_text(json.dumps(ledger, indent=1) + "\n")


def hours(step: dict) -> float:
    return sum(p["seconds"] for p in step.get("parts", [])) / 3600


def run_part(step: Step, ledger: dict) -> int:
    """Run `step`'s command once, to its end or until it is stopped; the part is in the ledger all the while."""
    part = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": 0.0, "machine": hardware(), "commit": head(),
            "finished": False, "exit_code": None}
    ledger["steps"].setdefault(step.name, {"parts": []})["parts"].append(part)
    write_ledger(ledger)
    # float32 on every machine: the re-run spans sessions on whatever CPU each gets, and the cpu profile's "auto" takes
    # bf16 on a CPU with AMX, which would make the records of one study in two precisions
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ALIGNLIB_PROFILE": "cpu", "ALIGNLIB_TRAIN": "1", "ALIGNLIB_REUSE_RUNS": "1",
           "ALIGNLIB_AMP": "none"}
    LOGS.mkdir(exist_ok=True)
    start = time.perf_counter()
    with open(LOGS / f"rerun_{step.name}.log", "a") as log:
        log.write(f"\n==== {part['started']} {' '.join(step.command)}\n")
        log.flush()
        proc = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            try:
                proc.wait(timeout=HEARTBEAT_S)
            except subprocess.TimeoutExpired:
                part["seconds"] = round(time.perf_counter() - start, 1)
                write_ledger(ledger)
    part.update(seconds=round(time.perf_counter() - start, 1), exit_code=proc.returncode,
                finished=proc.returncode == 0)
    write_ledger(ledger)
    return proc.returncode


def unfinished_states(version: str) -> list:
    """The checkpoint folders (checkpoints/<profile>/<name>_state) of the runs that code `version` has not recorded
    whole."""
    out = []
    for latest in sorted(CHECKPOINTS.glob("*/**/LATEST")):
        state = latest.parent
        profile = state.relative_to(CHECKPOINTS).parts[0]
        name = state.relative_to(CHECKPOINTS / profile).as_posix().removesuffix("_state")
        if not recorded_whole(records.made_here(name, profile), version):
            out.append(state)
    return out


def save_state(version: str) -> None:
    """Pack into STATE the newest checkpoint of each unfinished run up to PACK_LIMIT_MB, with its loose files (the
    training log), and the cached SFT replies: what the next session needs to continue on a fresh clone. A policy's
    checkpoint (its whole weights and Adam's moments in float32, 1.5 GiB for SmolLM2-135M) is left out: that run
    starts over on a fresh clone, so stop the re-run between such runs where a session may end on one."""
    files, packed, left_out = [], [], []
    for state in unfinished_states(version):
        newest = (state / "LATEST").read_text().strip()
        these = [f for f in state.rglob("*") if f.is_file() and
                 (f.parent == state or f.relative_to(state).parts[0] == newest)]
        size_mb = sum(f.stat().st_size for f in these) / 2**20
        if size_mb > PACK_LIMIT_MB:
            left_out.append(f"{state.relative_to(ROOT)} ({size_mb / 1024:.1f} GiB)")
        else:
            files += these
            packed.append(str(state.relative_to(ROOT)))
    files += sorted(CHECKPOINTS.glob("*/sft_replies/*.json"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for f in sorted(files):
            tar.add(f, arcname=f.relative_to(ROOT).as_posix())
    STATE.write_bytes(buffer.getvalue())
    print(f"{STATE.relative_to(ROOT)}: {len(files)} files, {STATE.stat().st_size / 2**20:.1f} MiB; commit it. "
          f"Packed: {', '.join(packed) or 'no unfinished run'}, and the cached SFT replies."
          + (f" Too large to commit, so these start over on a fresh clone: {', '.join(left_out)}." if left_out else ""))


def state_folder(member: str) -> Path | None:
    """The checkpoint folder (…/<name>_state) that a packed file belongs to; None for a cached SFT reply file."""
    return next((p for p in Path(member).parents if p.name.endswith("_state")), None)


def restore_state() -> None:
    """Unpack from STATE each checkpoint folder this machine does not have, and the SFT replies it lacks: a folder
    that exists here (a run that went on in this working directory) is newer than the packed one."""
    if not STATE.exists():
        return
    with tarfile.open(STATE) as tar:
        members = tar.getmembers()
        for m in members:
            if not m.isfile() or Path(m.name).parts[0] != "checkpoints" or ".." in Path(m.name).parts:
                sys.exit(f"{STATE}: unexpected member {m.name}; delete the file to start the unfinished runs over")
        fresh = [m for m in members if not (ROOT / state_folder(m.name) / "LATEST" if state_folder(m.name)
                                            else ROOT / m.name).exists()]
        tar.extractall(ROOT, members=fresh, filter="data")
    runs = sorted({str(state_folder(m.name)) for m in fresh if state_folder(m.name)})
    if fresh:
        print(f"[rerun] restored from {STATE.relative_to(ROOT)}: {', '.join(runs) or 'SFT replies only'}", flush=True)


def plan(version: str) -> None:
    ledger = read_ledger(version)
    print(f"code version {version}")
    for step in STEPS + [FINAL]:
        left = missing(step, version) if step.writes else None
        spent = hours(ledger["steps"].get(step.name, {}))
        state = ("done" if left == [] or (left is None and ledger["steps"].get(step.name, {}).get("done_at") == head())
                 else f"left: {', '.join(left)}" if left else "to do")
        print(f"  {step.name:24s} {spent:5.1f} h so far  {state}")


def parse(argv: list[str]) -> argparse.Namespace:
    names = [s.name for s in STEPS]
    parser = argparse.ArgumentParser(prog="python -m report.rerun", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="what is done, what is left, and the hours each part took")
    mode.add_argument("--save-state", action="store_true",
                      help="pack the SFT replies and the unfinished reward models' checkpoints, to commit")
    mode.add_argument("--step", nargs="+", choices=names, metavar="NAME",
                      help=f"only these steps, never the final report (of: {', '.join(names)})")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    version = records.code_version()
    if version == "unknown" or version.endswith("+dirty"):
        sys.exit(f"the code is {version}: commit it first, so that every record of the re-run names one version")
    if os.environ.get(records.RESULTS_ENV, "").strip():
        sys.exit(f"{records.RESULTS_ENV} is set: the re-run makes the repository's own records (its ledger, saved state "
                 f"and checkpoints are the repository's); unset it and run again")
    if args.plan:
        plan(version)
        return 0
    if args.save_state:
        save_state(version)
        return 0
    # --step: a carryable part (a reward model) in a session's last half hour
    steps = [s for s in STEPS if s.name in args.step] if args.step else STEPS
    restore_state()
    ledger = read_ledger(version)
    for step in steps:
        while left := missing(step, version):
            print(f"[rerun] {step.name}: {len(left)} record(s) to make ({', '.join(left)})", flush=True)
            if run_part(step, ledger) != 0:
                sys.exit(f"[rerun] {step.name} failed: see logs/rerun_{step.name}.log")
            if missing(step, version) == left:
                sys.exit(f"[rerun] {step.name} finished but did not write {', '.join(left)}: see logs/rerun_{step.name}.log")
        ledger["steps"].setdefault(step.name, {"parts": []})["done"] = True
        write_ledger(ledger)
    if steps != STEPS:  # the final report only after a run of every step
        plan(version)
        return 0
    final = ledger["steps"].get(FINAL.name, {})
    if final.get("done_at") != head():
        print("[rerun] every run is recorded: the summaries, the notebooks and the report from the records", flush=True)
        for write in (summaries.write_rm_ablation_summary, summaries.write_seeds_summary,
                      summaries.write_overoptimization_summary):  # with the summaries' code of this commit
            write("cpu")
        if run_part(FINAL, ledger) != 0:
            sys.exit("[rerun] make report REUSE=1 failed: see logs/rerun_report.log")
        ledger["steps"][FINAL.name]["done_at"] = head()
        write_ledger(ledger)
        STATE.unlink(missing_ok=True)  # every run is recorded: nothing left to continue
    plan(version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
