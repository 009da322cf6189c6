"""Run records: one JSON object per run under results/<profile>/, read by notebooks, studies and the report.

Runs write under the output root: the repository, or ``$ALIGNLIB_RESULTS_DIR`` (e.g. a Google Drive
folder on Colab, where a VM reset would otherwise lose every result and checkpoint), which then holds
``results/<profile>/`` and ``checkpoints/<profile>/`` as the repository does. The published records and
adapters (the committed ``results/cpu/``, ``results/full/``) stay in the repository and are read from
there when the output root does not have them.

Here are also the two questions every caller asks of them: is this run already recorded
(`reusable`, one rule for the notebooks, the command line and the studies), and where is the reward
model a run names (`find_adapter`). docs/architecture.md lists the keys a record carries.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import time
from pathlib import Path

import torch

from . import machine

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("profile", "model_source", "data_source", "seed", "wall_time_s", "peak_memory_mb", "config", "metrics",
            "device", "precision", "precision_requested", "precision_reason")  # every record carries these


RESULTS_ENV = "ALIGNLIB_RESULTS_DIR"


def output_root() -> Path:
    """Where runs write `results/` and `checkpoints/`: ``$ALIGNLIB_RESULTS_DIR``, else the repository."""
    where = os.environ.get(RESULTS_ENV, "").strip()
    return Path(where).expanduser().resolve() if where else ROOT


def results_dir(profile: str) -> Path:
    d = output_root() / "results" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoints_dir(profile: str) -> Path:
    d = output_root() / "checkpoints" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def portable(path: Path | str) -> str:
    """A path as a record stores it: relative to the output root, or to the repository (the published
    adapters), so that records stay true when their folder moves; absolute only outside both. A relative path
    is taken as one already written so."""
    if not Path(path).is_absolute():
        return Path(path).as_posix()
    path = Path(path).resolve()
    for root in (output_root(), ROOT):
        if path.is_relative_to(root.resolve()):
            return path.relative_to(root.resolve()).as_posix()
    return str(path)


def resolve(recorded: Path | str) -> Path:
    """The file or folder a record names (`portable`): under the output root where it is there, else the
    repository's (published) one."""
    recorded = Path(recorded)
    if recorded.is_absolute():
        return recorded
    mine = output_root() / recorded
    return mine if mine.exists() else ROOT / recorded


CODE = ("alignlib", "benchmarks")  # the code that computes the numbers (notebooks record their settings)
# the modules of alignlib that never run inside a run: they show the records (plots, tables), word what they say
# (verdicts), summarise the studies' records into their summaries (re-made from the records at any time), or teach
# (exercises, solutions, toys). A change to them leaves every record true, so it does not change the code version:
# a re-run of every record that spans weeks stays one version while the report is written.
PRESENTATION = ("alignlib/plots.py", "alignlib/tables.py", "alignlib/verdicts.py", "alignlib/summaries.py",
                "alignlib/exercises.py", "alignlib/solutions.py", "alignlib/toys.py")


CODE_VERSION_ENV = "ALIGNLIB_CODE_VERSION"


def code_version() -> str:
    """The last git commit that changed the code (`CODE`, less `PRESENTATION`), "+dirty" when it has
    uncommitted changes: tells which code a record came from. Outside a git checkout (a copy of the files, e.g.
    sent to a GPU machine without .git), what ``$ALIGNLIB_CODE_VERSION`` says it is, else "unknown".

    Commits that touch only notebooks, the report or the results leave it unchanged, so records
    written over several sessions by the same code carry the same version."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)

    outside = os.environ.get(CODE_VERSION_ENV, "").strip() or "unknown"
    paths = (*CODE, *(f":(exclude){p}" for p in PRESENTATION))
    try:
        last = git("log", "-1", "--format=%H", "--", *paths)
        if last.returncode != 0 or not last.stdout.strip():
            return outside
        dirty = git("status", "--porcelain", "--", *paths).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return outside
    return last.stdout.strip()[:12] + ("+dirty" if dirty else "")


_LOADED: dict[Path, str] = {}


def loaded_code_version() -> str:
    """`code_version()` as it was when this process first asked (its first run's `seed_everything`):
    the code the process imported. A run of hours goes on with the code it loaded even when the
    checkout changes under it, and its record must say that code, not the checkout's at the end."""
    return _LOADED.setdefault(ROOT, code_version())


def _clean(x):
    """JSON-safe copy: tensors and numpy numbers to Python, NaN/inf refused."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"refusing to write a non-finite number ({x}) into a run record")
    return x


def write_record(name: str, profile: str, *, model_source: str, data_source: str, seed: int,
                 wall_time_s: float, config: dict, metrics: dict, amp: str, path: Path | None = None,
                 **extra) -> Path:
    """Write results/<profile>/<name>.json (or `path`) with the fields every record carries.

    `amp` is the run's precision setting (e.g. `cfg.amp`): the record states what it resolved to
    on this device, and why (`precision.describe`).
    """
    from . import precision
    from .config import model_id

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = {
        "name": name,
        "profile": profile,
        "model": model_id(),
        "model_source": model_source,
        "data_source": data_source,
        "seed": seed,
        "wall_time_s": round(wall_time_s, 1),
        "peak_memory_mb": _round(machine.peak_memory_mb()),
        "hardware": machine.hardware(),
        "device": device.type,
        **precision.describe(amp, device),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_version": loaded_code_version(),
        "config": config,
        "metrics": metrics,
        **extra,
    }
    path = Path(path) if path else results_dir(profile) / f"{name}.json"  # `name` may hold a folder: "rm_dev/x"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _round(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def record_path(name: str, profile: str) -> Path:
    """Where run record `name` of `profile` lives (`name` may hold a folder: "seeds/reinforce_ema_seed1")."""
    return output_root() / "results" / profile / f"{name}.json"


def made_here(name: str, profile: str) -> dict | None:
    """Run record `name` of `profile` as the output root holds it (never the published one), or None: what a
    run about to train, or a study's summary, asks of this machine's own runs."""
    path = record_path(name, profile)
    return json.loads(path.read_text()) if path.exists() else None


def same_settings(a, b) -> bool:
    """Whether two run settings are equal once written as JSON (tuples become lists), as a record stores them."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


# which notebook writes each record a later notebook reads
WRITTEN_BY = {"data": "01_data", "rm_scalar": "02_scalar_reward_model", "reinforce_ema": "03_reinforce",
              "reinforce_rloo": "03_reinforce", "reinforce_ema_kl": "03_reinforce", "reinforce_none": "03_reinforce",
              "reinforce_ema_original_lr": "03_reinforce",
              "rm_prob": "04_probabilistic_reward_model", "rm_prob_beats": "04_probabilistic_reward_model",
              "reinforce_prob_expected": "04_probabilistic_reward_model",
              "reinforce_prob_sampled": "04_probabilistic_reward_model", "comparison": "05_comparison"}
PUBLISHED = "cpu"  # the profile whose records are committed for every notebook


class MissingRecordError(FileNotFoundError):
    """A run record that an earlier notebook writes has not been made here (the message says which notebook)."""


def read_record(name: str, profile: str) -> dict:
    """Run record `name` of `profile` from the output root, else the repository's published one.

    MissingRecordError (naming the notebook to run) when neither has it."""
    path = resolve(f"results/{profile}/{name}.json")  # the output root's, else the one published with the repository
    if not path.exists():
        notebook = WRITTEN_BY.get(name.split("/")[0], "that writes it")
        raise MissingRecordError(
            f"no run record {name}.json at profile {profile!r} (looked in {record_path(name, profile).parent}): notebook "
            f"{notebook} has not run at this profile on this machine. Run it first (on Colab each notebook gets its own "
            f"machine: set ${RESULTS_ENV} to a Google Drive folder to keep records between them), or show the published "
            f"{PUBLISHED!r} records instead (records.records_here_or_published).")
    record = json.loads(path.read_text())
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"run record {path} lacks {missing}")
    return record


def records_here_or_published(names, profile: str) -> tuple[str, dict[str, dict]]:
    """(profile, {name: record}): the records `names` of `profile` when all of them exist, else the published
    `PUBLISHED` ones, all of one profile (never a mix), with a notice saying so. A notebook that needs the runs
    of earlier notebooks shows the published ones when those notebooks have not run here (a fresh Colab
    machine), instead of failing. At the smoke profile nothing is substituted (MissingRecordError): smoke
    checks that the notebooks' own chain works."""
    try:
        return profile, {name: read_record(name, profile) for name in names}
    except MissingRecordError as missing:
        if profile in ("smoke", PUBLISHED):
            raise
        records = {name: read_record(name, PUBLISHED) for name in names}
        made = sorted({f"{r['hardware'].split(',')[0]}, code {r['code_version']}" for r in records.values()})
        print(f"[alignlib] NOTE: {missing}\n[alignlib] Showing the PUBLISHED {PUBLISHED!r} records instead (committed "
              f"with the course; made on {'; '.join(made)}), not runs of this machine.")
        return PUBLISHED, records


def machine_of(record: dict) -> str:
    """The short name of the machine a record was made on, for a label (e.g. "AMD EPYC (x86_64, AVX2)")."""
    return ", ".join(record.get("hardware", "unknown machine").split(", ")[:2])


def made_by(record: dict) -> str:
    """Who made a record, for its label: "<date>, code <version>, <machine>, <minutes> min"."""
    return (f"{record['created'][:10]}, code {record['code_version']}, {machine_of(record)}, "
            f"{record['wall_time_s'] / 60:.0f} min")


def published_record(name: str) -> dict:
    """The committed record `name` of the `PUBLISHED` profile, saying so with who made it (`made_by`): what a
    notebook shows instead of training a long run (`runs.train_long_runs`)."""
    record = read_record(name, PUBLISHED)
    print(f"[alignlib] {name}: the PUBLISHED {PUBLISHED!r} record, not a run of this machine ({made_by(record)})")
    return record


def cost_note(name: str) -> str:
    """What training run `name` costs, from the records that measured it: the published `PUBLISHED` one (a
    2-core CPU) and the `full` profile's (a GPU), or "not measured" where there is none."""
    costs = []
    for profile in (PUBLISHED, "full"):
        try:
            record = read_record(name, profile)
        except MissingRecordError:
            costs.append(f"not measured at {profile!r}" + (" (a GPU)" if profile == "full" else ""))
            continue
        costs.append(f"{record['wall_time_s'] / 60:.0f} min at {profile!r} on {machine_of(record)}")
    return f"{name}: " + "; ".join(costs)


REUSE_ENV = "ALIGNLIB_REUSE_RUNS"
# settings that name an input by its folder (a saved reward model): compared by the digest of its weights instead,
# so that the same weights found in another folder (a fresh clone's published copy) count as the same input
INPUT_FOLDERS = ("reward_model",)


def adapter_digest(adapter: Path | str) -> str | None:
    """sha256 of a saved reward model's weights (adapter and head: adapter_model.safetensors), or None
    without them: which reward model a policy was trained against, beyond its folder's name."""
    weights = resolve(adapter) / "adapter_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else None


def reuse_requested() -> bool:
    """Whether ``$ALIGNLIB_REUSE_RUNS`` asks the notebooks and the command line to reuse finished runs."""
    return os.environ.get(REUSE_ENV, "").strip().lower() in ("1", "true", "yes")


def same_run(record: dict, settings: dict, amp: str, digests: dict | None = None) -> bool:
    """Whether `record` is the run that training with `settings` would make again, up to float rounding: this
    code made it (the same `code_version`, with no uncommitted changes), with these settings (its "config",
    inputs named by folder left out), in the precision this machine resolves `amp` to, from the same input
    weights (`digests`: record field -> digest, e.g. {"reward_model_sha256": adapter_digest(...)})."""
    from . import precision

    def without_folders(s):
        return {k: v for k, v in s.items() if k not in INPUT_FOLDERS}

    version = loaded_code_version()
    return (version != "unknown" and not version.endswith("+dirty") and record.get("code_version") == version
            and same_settings(without_folders(record["config"]), without_folders(settings))
            and record.get("precision") == precision.resolve(amp, machine.device()).amp
            and all(record.get(k) == v for k, v in (digests or {}).items()))


def reusable(name: str, profile_name: str, settings: dict, amp: str, digests: dict | None = None,
             always: bool = False) -> dict | None:
    """The record of run `name` to take instead of training it again (`same_run`), or None (train).

    The notebooks and the command line look only with ``$ALIGNLIB_REUSE_RUNS=1`` (`make report REUSE=1`): an
    execution that stopped (a session that ended, a lost Colab) continues without training again the runs it
    finished, and without it every run trains, as a reader stepping through expects. The studies always look
    (`always`): they are made to be stopped and started again. Under `accelerate launch` every run trains."""
    if not (always or reuse_requested()) or machine.process_state().num_processes > 1:
        return None
    record = made_here(name, profile_name)
    if record is None or not same_run(record, settings, amp, digests):
        return None
    print(f"[alignlib] {name}: reusing {portable(record_path(name, profile_name))}: made {record['created']} by this code "
          f"({record['code_version']}) with these settings, in {record['precision']}")
    return record


def find_adapter(profile: str, name: str) -> Path:
    """The saved reward model `name` ("rm_scalar", or the folder a record names): the one trained on this
    machine (the recorded folder, or checkpoints/<profile>/<name> under the output root), else the one this
    profile published (results/<profile>/adapters/<name>), else the published `PUBLISHED` one.
    `models.load_reward_model` refuses one trained on another model or data source than the run's."""
    short = Path(name).name
    candidates = [resolve(name)] if "/" in name else []
    candidates += [output_root() / "checkpoints" / profile / short, resolve(f"results/{profile}/adapters/{short}"),
                   ROOT / "results" / PUBLISHED / "adapters" / short]
    for adapter in candidates:
        if (adapter / "adapter_config.json").exists():
            return adapter
    raise FileNotFoundError(f"no saved reward model {short!r} (looked in {', '.join(portable(c) for c in candidates)}): "
                            f"run notebook {WRITTEN_BY.get(short, '02 or 04')} first")


def state_dir(profile, name: str) -> Path | None:
    """Where run `name` checkpoints its training state (delete it to start the run over).

    None at the smoke profile: no checkpoints. A smoke run is two steps, and the final checkpoint of a
    REINFORCE policy (weights and AdamW state, 1.6 GB) took a third of its time on a 2-core CPU; resuming
    is tested on tiny models instead (tests/test_resume.py, tests/test_distributed.py).
    """
    if profile.name == "smoke":
        return None
    return checkpoints_dir(profile.name) / f"{name}_state"


SUMMARIES = {"rm_ablation": "make rm-ablation", "seeds": "make seeds", "overoptimization": "make overoptimization"}


def read_summary(name: str, profile_name: str) -> dict | None:
    """A study's summary (results/<profile>/<name>.json, the output root's, else the published one), or None, saying
    which command makes it, when it is not there."""
    path = resolve(f"results/{profile_name}/{name}.json")
    if not path.exists():
        print(f"{portable(path)} does not exist yet: `ALIGNLIB_PROFILE={profile_name} {SUMMARIES[name]}` "
              "writes it (hours on a CPU; resumable)")
        return None
    return json.loads(path.read_text())
