"""Fault injection on the demo DAG: SIGKILL one job of every stage, rerun, compare with an uninterrupted run.

How it works (nothing in the pipeline knows it is being tested; no hooks in production code):

* **Reference.** The tiny DAG (`tiny_config`) runs once without faults. A `ProcessWatcher` notes how long the
  `avat3r <stage>` process of each stage lives, and every output is checksummed (`digest_tree`).
* **Faults.** The same DAG runs again in another folder, with `--keep-going`, while the watcher looks for the
  `avat3r <stage>` processes of that folder (by `/proc/<pid>/cmdline` and `cwd`) and sends SIGKILL to the
  first process of each stage not yet hit, at a moment drawn from a seeded RNG: uniform over the reference
  lifetime of that stage's process (interpreter start-up included, as for a real kill). A kill that comes
  too late (the process had finished) is not counted; that stage is tried again in the next run, with
  `--forcerun <rule>` when all of its jobs have finished. Runs repeat until every stage was killed once and
  a run completes (exit 0).
* **Visibility.** A `VisibilityWatcher` polls every final output path during all runs. Each time a path
  appears under a new inode (an atomic rename gives a new one) its content must already equal the
  reference; a path that changes under the same inode may only lose files (Snakemake deleting it). Training
  checkpoints (`checkpoints/last.pt`) legitimately change between steps: each new one must load.
* **Comparison.** After the last run every file of both folders is compared by sha256, except what is not
  deterministic between two uninterrupted runs (found by running twice; `EXCLUDED` lists them): the logs
  and benchmark tables (times, durations), the TensorBoard event files (wall times in the file name and
  records; their scalars and images are compared per (tag, step) instead, without the timing scalars) and
  `train_log.jsonl` (compared per step without its `data_s`/`step_s` timing keys; a resumed run appends
  the steps it replays, which must repeat the same values) and the report's training-curves picture, which
  plots the measured seconds per step (`NONDETERMINISTIC`: it must decode while it appears; figures.json,
  which lists its sha256, is compared without that entry). Temporary siblings of killed writers
  (`.<name>.tmp-*`, never at a final path) are listed separately; the next write of the same path removes
  them (`avat3r_core.store.atomic`), so none may be left after the last run.
* **Full disk.** `full_disk_shard` puts one subject's folder on a small tmpfs (its inputs fit, the shard
  does not) and forces that subject's `shards` job: it must fail with one line naming the shard ("No space
  left on device while writing ...", no traceback) and leave neither the shard nor its temporary sibling.
  Where `mount` is not permitted (not root, a container without CAP_SYS_ADMIN) the check is skipped with
  that reason.

The rules are read from the reference run's log (`Dag.from_log`: every rule whose shell runs
`avat3r <subcommand>`), so a new stage is killed too without editing this file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avat3r_core.config import REPO_ROOT
from tests.test_workflow import TINY

RULE_LINE = re.compile(r"^(?:local)?rule (\w+):$")
OUTPUT_LINE = re.compile(r"^\s+output: (.*)$")
COMMAND = re.compile(r"(?:^|[\s;/])avat3r(?:\s+-\S+)*\s+([a-z][\w-]*)")
# Not compared byte for byte (they differ between two uninterrupted runs), and why.
EXCLUDED = {
    ".snakemake/": "Snakemake's own metadata and logs",
    "results/logs/": "stage logs: timestamps and durations",
    "results/benchmarks/": "Snakemake benchmark tables: measured times and memory",
    "results/train/base/tensorboard/": "event files: wall times (compared per tag and step instead)",
    "results/train/base/train_log.jsonl": "data_s/step_s timings (compared per step without them)",
    ".snakemake_timestamp": "Snakemake's marker in folder outputs (empty)",
}
TIMING_KEYS = ("data_s", "step_s")
# Outputs of the DAG that differ between two uninterrupted runs: checked for completeness while they are
# written (they must parse) and compared on what is deterministic.
NONDETERMINISTIC = {
    "results/report/train/*/curves.png": "plots the measured seconds per step (step_s): not compared",
    "results/report/figures.json": "lists every figure's sha256: compared without the entries of the above",
}
# The tiny capture of the workflow tests (2 subjects, 6 cameras, 2 frames per segment).
TINY_SYNTHETIC = TINY


def tiny_config(workdir: Path) -> Path:
    """config.yaml with a 2-subject capture and 4 training steps with a checkpoint every 2 (so that a kill
    of training can resume from a checkpoint), written into `workdir`."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["synthetic"].update(TINY_SYNTHETIC)
    config["train"].update(
        steps=4, checkpoint_every=2, n_supervision=2, num_workers=0, log_every=1, image_every=2
    )
    config["evaluate"].update(max_items=2)
    config["variants"] = {"base": {}}  # one training run (the demo's other variants train longer)
    path = workdir / "config.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Dag:
    """What the uninterrupted run's log says about each rule: its `avat3r` subcommand and its outputs."""

    commands: dict[str, str]  # rule -> avat3r subcommand (rules without one, such as `all`, left out)
    outputs: dict[str, set[str]]  # rule -> every output path of its jobs (relative)

    @classmethod
    def from_log(cls, text: str) -> Dag:
        commands: dict[str, str] = {}
        outputs: dict[str, set[str]] = {}
        rule = None
        for line in text.splitlines():
            if match := RULE_LINE.match(line.strip()):
                rule = match.group(1)
            elif rule and (match := OUTPUT_LINE.match(line)):
                outputs.setdefault(rule, set()).update(p.strip() for p in match.group(1).split(", "))
            elif rule and rule not in commands and (match := COMMAND.search(line)):
                commands[rule] = match.group(1)
        return cls(commands, {rule: outputs.get(rule, set()) for rule in commands})

    @property
    def command_to_rule(self) -> dict[str, str]:
        return {command: rule for rule, command in self.commands.items()}

    def final_paths(self, workdir: Path) -> dict[str, str]:
        """Every final output path (relative) -> how the visibility watcher checks it."""
        paths = {
            path: "valid" if nondeterministic(path) else "exact"
            for outputs in self.outputs.values()
            for path in outputs
        }
        for model in [p for p in paths if p.endswith("/model.pt")]:
            paths[str(Path(model).parent / "checkpoints" / "last.pt")] = "checkpoint"
        return paths


def nondeterministic(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in NONDETERMINISTIC)


def parses(path: Path) -> bool:
    """Whether a (nondeterministic) output is complete: a PNG that decodes, JSON that parses."""
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        return True
    except FileNotFoundError:
        raise
    except Exception:
        return False


def subjects(workdir: Path) -> list[str]:
    from avat3r_core.capture.synthetic import SyntheticConfig, synthetic_subject_ids

    config = yaml.safe_load((workdir / "config.yaml").read_text())
    fields = SyntheticConfig.__dataclass_fields__
    return list(
        synthetic_subject_ids(
            SyntheticConfig(**{k: v for k, v in config["synthetic"].items() if k in fields})
        )
    )


# -- checksums --------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_temporary(name: str) -> bool:
    """A temporary sibling of `avat3r_core.store.atomic` (`.<name>.tmp-XXXX`)."""
    return name.startswith(".") and ".tmp-" in name


def digest_tree(path: Path) -> dict[str, str]:
    """relative file path -> sha256, for a file ('' -> sha256) or every file under a folder; Snakemake's
    `.snakemake_timestamp` left out. Raises FileNotFoundError when something vanishes while it reads."""
    if not path.is_dir():
        return {"": file_sha256(path)}
    out = {}
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if name == ".snakemake_timestamp":
                continue
            file = Path(root) / name
            out[file.relative_to(path).as_posix()] = file_sha256(file)
    return out


# -- the processes of the stages ----------------------------------------------------------------------------


def stage_processes(workdir: Path, command_to_rule: dict[str, str] | None = None) -> dict[int, str]:
    """pid -> rule (or subcommand, without a mapping) of every `avat3r <subcommand>` process whose working
    directory is `workdir`."""
    found = {}
    target = str(workdir.resolve())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            if not any(Path(a.decode(errors="replace")).name == "avat3r" for a in argv[:2]):
                continue
            if os.readlink(f"/proc/{entry.name}/cwd") != target:
                continue
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        start = next(i for i, a in enumerate(words) if Path(a).name == "avat3r") + 1
        command = next((w for w in words[start:] if not w.startswith("-")), None)
        if command is not None:
            found[int(entry.name)] = (command_to_rule or {}).get(command, command)
    return found


@dataclass
class Fault:
    rule: str
    pid: int
    after_s: float  # seconds after the process was first seen
    run: int


class ProcessWatcher(threading.Thread):
    """Notes the lifetime of every stage process; kills the first process of each rule in `targets`."""

    def __init__(
        self,
        workdir: Path,
        *,
        command_to_rule: dict[str, str] | None = None,
        targets: Iterable[str] = (),
        lifetimes: dict[str, float] | None = None,
        rng: random.Random | None = None,
        run: int = 0,
        interval: float = 0.005,
    ) -> None:
        super().__init__(daemon=True)
        self.workdir, self.targets, self.interval, self.run_number = workdir, set(targets), interval, run
        self.lifetimes, self.rng = lifetimes or {}, rng or random.Random(0)
        self.command_to_rule = command_to_rule
        self.seen: dict[int, tuple[str, float]] = {}
        self.durations: dict[str, list[float]] = {}
        self.kill_at: dict[int, float] = {}
        self.faults: list[Fault] = []
        self.missed: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        finished: set[int] = set()
        while not self.stopping.is_set():
            now = time.monotonic()
            alive = stage_processes(self.workdir, self.command_to_rule)
            for pid, rule in alive.items():
                if pid not in self.seen or pid in finished:  # new (or a reused pid)
                    finished.discard(pid)
                    self.seen[pid] = (rule, now)
                    if rule in self.targets:
                        self.targets.discard(rule)  # one process per rule and run
                        lifetime = max(self.lifetimes.get(rule, 1.0), 0.02)
                        self.kill_at[pid] = now + self.rng.uniform(0.0, lifetime)
            for pid, at in list(self.kill_at.items()):
                rule, first = self.seen[pid]
                if pid not in alive:
                    self.missed.append(rule)  # it finished before its moment came
                    del self.kill_at[pid]
                elif now >= at:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        self.missed.append(rule)
                    else:
                        self.faults.append(Fault(rule, pid, round(now - first, 3), self.run_number))
                    del self.kill_at[pid]
            for pid, (rule, first) in self.seen.items():
                if pid not in alive and pid not in finished:
                    finished.add(pid)
                    self.durations.setdefault(rule, []).append(now - first)
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


# -- no half-written output at a final path -----------------------------------------------------------------


@dataclass
class Violation:
    path: str
    what: str


class VisibilityWatcher(threading.Thread):
    """Polls the final output paths; see the module docstring for what it accepts."""

    def __init__(
        self,
        workdir: Path,
        paths: dict[str, str],
        reference: dict[str, dict[str, str]],
        interval: float = 0.01,
    ) -> None:
        super().__init__(daemon=True)
        self.workdir, self.paths, self.reference, self.interval = workdir, paths, reference, interval
        self.violations: list[Violation] = []
        self.checks = 0
        self.vanished = 0
        self._last: dict[str, tuple[int, int, int] | None] = dict.fromkeys(self.paths)
        self._content: dict[str, dict[str, str]] = {}
        self.stopping = threading.Event()

    def _check(self, relative: str, key: tuple[int, int, int], previous: tuple[int, int, int] | None) -> None:
        path = self.workdir / relative
        self.checks += 1
        if self.paths[relative] == "checkpoint":
            from avat3r_core.recon.checkpoint import CheckpointError, load_checkpoint

            try:
                load_checkpoint(path)
            except CheckpointError as error:
                if path.exists() and _key(path) == key:
                    self.violations.append(Violation(relative, f"unloadable checkpoint: {error}"))
                else:
                    self.vanished += 1
            return
        if self.paths[relative] == "valid":
            try:
                if not parses(path) and path.exists() and _key(path) == key:
                    self.violations.append(Violation(relative, "incomplete: does not parse"))
            except FileNotFoundError:
                self.vanished += 1
            return
        try:
            content = digest_tree(path)
        except FileNotFoundError:
            self.vanished += 1  # removed (by Snakemake) while it was read
            return
        same_inode = previous is not None and previous[0] == key[0]
        if content == self.reference[relative]:
            self._content[relative] = content
        elif same_inode and relative in self._content and _shrunk(content, self._content[relative]):
            self._content[relative] = content  # being deleted file by file
        elif _key(path) != key or not path.exists():
            self.vanished += 1
        else:
            missing = sorted(set(self.reference[relative]) - set(content))
            changed = sorted(k for k in content if self.reference[relative].get(k) != content[k])
            self.violations.append(
                Violation(
                    relative,
                    f"{'modified in place' if same_inode else 'appeared'} with content unlike the "
                    f"uninterrupted run: {len(missing)} files missing {missing[:3]}, {len(changed)} differ "
                    f"{changed[:3]}",
                )
            )

    def poll(self) -> None:
        for relative, previous in self._last.items():
            try:
                key = _key(self.workdir / relative)
            except FileNotFoundError:
                self._last[relative] = None
                continue
            if key != previous:
                self._check(relative, key, previous)
                self._last[relative] = key

    def run(self) -> None:
        while not self.stopping.is_set():
            self.poll()
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.poll()


def _key(path: Path) -> tuple[int, int, int]:
    stat = path.lstat()
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size if not path.is_dir() else 0)


def _shrunk(now: dict[str, str], before: dict[str, str]) -> bool:
    return set(now) <= set(before) and all(before[k] == v for k, v in now.items())


# -- running the DAG ----------------------------------------------------------------------------------------


# The Snakefile under test; AVAT3R_FAULTS_SNAKEFILE points at another checkout's (e.g. a patched copy).
SNAKEFILE = Path(os.environ.get("AVAT3R_FAULTS_SNAKEFILE", REPO_ROOT / "Snakefile"))


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--workflow-profile",
        str(REPO_ROOT / "workflow" / "profiles" / "default"),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def stray_processes(workdir: Path) -> int:
    """Kill (and count) processes left running in `workdir` after a run (children of a killed stage)."""
    target, count = str(workdir.resolve()), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if os.readlink(f"/proc/{entry.name}/cwd") == target:
                    os.kill(int(entry.name), signal.SIGKILL)
                    count += 1
            except OSError:
                continue
    return count


@dataclass
class Reference:
    workdir: Path
    dag: Dag
    lifetimes: dict[str, float]  # rule -> longest lifetime of its process
    digests: dict[str, dict[str, str]]  # final path -> digest_tree
    seconds: float

    @property
    def stages(self) -> list[str]:
        return list(self.dag.commands)


def reference_run(workdir: Path) -> Reference:
    tiny_config(workdir)
    watcher = ProcessWatcher(workdir)
    watcher.start()
    started = time.monotonic()
    result = snakemake(workdir)
    watcher.stop()
    if result.returncode != 0:
        raise AssertionError(f"reference run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    dag = Dag.from_log(result.stdout + result.stderr)
    lifetimes = {
        dag.command_to_rule[cmd]: max(t) for cmd, t in watcher.durations.items() if cmd in dag.command_to_rule
    }
    missing = set(dag.commands) - set(lifetimes)
    assert dag.commands and not missing, f"stage processes never seen: {missing}; rules: {dag.commands}"
    digests = {rel: digest_tree(workdir / rel) for rel in dag.final_paths(workdir)}
    return Reference(workdir, dag, lifetimes, digests, time.monotonic() - started)


@dataclass
class FaultReport:
    faults: list[Fault]
    missed: list[str]
    runs: int
    run_log: list[str]
    violations: list[Violation]
    visibility_checks: int
    vanished: int
    strays: int
    seconds: float

    @property
    def reruns(self) -> int:
        return self.runs - 1


def _all_outputs_done(workdir: Path, outputs: set[str]) -> bool:
    """Whether every output of a rule is there (then only --forcerun makes its jobs run again)."""
    return all((workdir / path).exists() for path in outputs)


def faulted_runs(workdir: Path, reference: Reference, *, seed: int, max_runs: int = 30) -> FaultReport:
    """Run the DAG until every stage was killed once and a run completes; see the module docstring."""
    tiny_config(workdir)
    rng = random.Random(seed)
    pending = reference.stages
    paths = reference.dag.final_paths(workdir)
    visibility = VisibilityWatcher(workdir, paths, reference.digests)
    visibility.start()
    faults: list[Fault] = []
    missed: list[str] = []
    run_log: list[str] = []
    strays = 0
    started = time.monotonic()
    runs = 0
    try:
        while True:
            runs += 1
            assert runs <= max_runs, f"still pending after {max_runs} runs: {pending}\n" + "\n".join(run_log)
            force = [r for r in pending if _all_outputs_done(workdir, reference.dag.outputs[r])]
            watcher = ProcessWatcher(
                workdir,
                command_to_rule=reference.dag.command_to_rule,
                targets=pending,
                lifetimes=reference.lifetimes,
                rng=rng,
                run=runs,
            )
            watcher.start()
            args = ["--keep-going"] + (["--forcerun", *force] if force else [])
            result = snakemake(workdir, *args)
            watcher.stop()
            strays += stray_processes(workdir)
            faults += watcher.faults
            missed += watcher.missed
            hit = {f.rule for f in watcher.faults}
            pending = [rule for rule in pending if rule not in hit]
            run_log.append(
                f"run {runs}: exit {result.returncode}, "
                f"killed {[(f.rule, f.after_s) for f in watcher.faults]}"
                f", missed {watcher.missed}, forced {force}"
            )
            if result.returncode != 0 and not watcher.faults:
                raise AssertionError(
                    f"run {runs} failed without a fault:\n" + "\n".join(run_log) + "\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            if not pending and result.returncode == 0 and not watcher.faults:
                break
    finally:
        visibility.stop()
    return FaultReport(
        faults,
        missed,
        runs,
        run_log,
        visibility.violations,
        visibility.checks,
        visibility.vanished,
        strays,
        time.monotonic() - started,
    )


# -- comparison ---------------------------------------------------------------------------------------------


def _excluded(relative: str) -> bool:
    return any(
        relative.startswith(prefix)
        if prefix.endswith("/")
        else relative.endswith(prefix) or relative == prefix
        for prefix in EXCLUDED
    )


def all_files(workdir: Path) -> tuple[dict[str, str], list[str]]:
    """relative path -> sha256 of every compared file; and the temporary siblings found."""
    files, temporary = {}, []
    for root, dirs, names in os.walk(workdir):
        rel_root = Path(root).relative_to(workdir).as_posix()
        for name in list(dirs):
            if is_temporary(name):
                temporary.append(f"{rel_root}/{name}")
                dirs.remove(name)
        for name in names:
            relative = f"{rel_root}/{name}" if rel_root != "." else name
            if is_temporary(name):
                temporary.append(relative)
            elif nondeterministic(relative) and relative.endswith(".json"):
                files[relative] = _filtered_json_sha256(Path(root) / name)
            elif not _excluded(relative) and not nondeterministic(relative):
                files[relative] = file_sha256(Path(root) / name)
    return files, sorted(temporary)


def _filtered_json_sha256(path: Path) -> str:
    """sha256 of a JSON file without the list entries whose "path" is a nondeterministic output."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [
                strip(v)
                for v in value
                if not (isinstance(v, dict) and nondeterministic(str(v.get("path", ""))))
            ]
        return value

    text = json.dumps(strip(json.loads(path.read_text())), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def train_log_records(workdir: Path) -> dict[int, list[dict[str, Any]]]:
    records: dict[int, list[dict[str, Any]]] = {}
    for line in (workdir / "results/train/base/train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.setdefault(record["step"], []).append(
            {k: v for k, v in record.items() if k not in TIMING_KEYS}
        )
    return records


def tensorboard_values(workdir: Path) -> dict[tuple[str, int], list[bytes]]:
    """(tag, step) -> serialised values (scalars and images) of every event file, wall times left out."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values: dict[tuple[str, int], list[bytes]] = {}
    for path in sorted((workdir / "results/train/base/tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag.removeprefix("train/") in TIMING_KEYS:
                    continue
                values.setdefault((value.tag, event.step), []).append(value.SerializeToString())
    return values


@dataclass
class Comparison:
    outputs: int  # final output paths (stores, folders, files) compared
    files: int
    differences: list[str]
    temporary_leftovers: list[str]
    train_log_steps: int
    tensorboard_values: int


def compare(reference: Reference, faulted: Path) -> Comparison:
    outputs = len(reference.dag.final_paths(faulted))
    reference_dir = reference.workdir
    ref_files, ref_temporary = all_files(reference_dir)
    got_files, temporary = all_files(faulted)
    assert not ref_temporary, f"temporary files in an uninterrupted run: {ref_temporary}"
    differences = [f"only in the reference: {p}" for p in sorted(set(ref_files) - set(got_files))]
    differences += [f"only after faults: {p}" for p in sorted(set(got_files) - set(ref_files))]
    differences += [
        f"content differs: {p}" for p in sorted(ref_files) if p in got_files and ref_files[p] != got_files[p]
    ]
    ref_log, got_log = train_log_records(reference_dir), train_log_records(faulted)
    if set(ref_log) != set(got_log):
        differences.append(f"train_log.jsonl: steps {sorted(ref_log)} vs {sorted(got_log)}")
    for step, records in got_log.items():
        if any(record != ref_log.get(step, [None])[0] for record in records):
            differences.append(f"train_log.jsonl: step {step} differs")
    ref_tb, got_tb = tensorboard_values(reference_dir), tensorboard_values(faulted)
    if set(ref_tb) != set(got_tb):
        differences.append(f"tensorboard: (tag, step) {sorted(set(ref_tb) ^ set(got_tb))[:5]} not in both")
    for key, values in got_tb.items():
        if key in ref_tb and any(value != ref_tb[key][0] for value in values):
            differences.append(f"tensorboard: {key} differs")
    return Comparison(outputs, len(ref_files), differences, temporary, len(got_log), len(got_tb))


# -- full disk ----------------------------------------------------------------------------------------------


@dataclass
class FullDisk:
    skipped: str | None = None
    returncode: int | None = None
    error_line: str = ""
    traceback: bool = False
    final_path_exists: bool = False
    temporary_left: list[str] = field(default_factory=list)
    tmpfs_kib: int = 0


def full_disk_shard(workdir: Path, subject: str) -> FullDisk:
    """Force `subject`'s shards job with its folder on a tmpfs that holds the inputs and 8 KiB more."""
    folder = workdir / "results" / subject
    aside = folder.with_name(f"{subject}.aside")
    folder.rename(aside)
    folder.mkdir()
    mounted = False
    try:
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mount.returncode != 0:
            return FullDisk(skipped=f"cannot mount a tmpfs: {(mount.stderr or mount.stdout).strip()}")
        mounted = True
        for child in aside.iterdir():
            if child.name == "shard.zarr":
                continue
            if child.is_dir():
                shutil.copytree(child, folder / child.name, copy_function=shutil.copy2)
            else:
                shutil.copy2(child, folder / child.name)
        stat = os.statvfs(folder)
        used_kib = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024
        size_kib = used_kib + 8  # two pages: the shard's group metadata may fit, its arrays do not
        subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(folder)], check=True)
        result = snakemake(workdir, "--force", f"results/{subject}/shard.zarr")
        log = (workdir / "results" / "logs" / "shards" / f"{subject}.log").read_text()
        error = next((line for line in log.splitlines() if "No space left" in line), "")
        return FullDisk(
            returncode=result.returncode,
            error_line=error.strip(),
            traceback="Traceback" in log,
            final_path_exists=(folder / "shard.zarr").exists(),
            temporary_left=sorted(p.name for p in folder.iterdir() if is_temporary(p.name)),
            tmpfs_kib=size_kib,
        )
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)
        aside.rename(folder)
