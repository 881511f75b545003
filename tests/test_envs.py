"""Conda environments per rule family: every rule names one, and each declares what its code imports.

The environments (envs/*.yaml) install the project from this checkout plus the extras of their family
(pyproject.toml). Rules and their environments come from the Snakemake API (the loaded workflow, under the
default config and under the backends that switch environments); the code a rule runs is the `avat3r`
subcommand in its shell command, followed through `avat3r_core` with `ast` (module-level and function-level
imports; the backend switches in GATED are followed only when the config selects that backend). Every
third-party import found must be declared by the rule's environment: its conda packages, its pip packages,
or the requirements of the project extras it installs. Adding `import foo` to a stage module without adding
foo to the environment (and the extra) fails here, naming the rule, the environment and the import chain.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from avat3r_core.config import REPO_ROOT

ENVS = REPO_ROOT / "envs"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]["name"]

# Rule -> environment (envs/<family>.yaml) under the default config. A new rule must be added here.
RULE_FAMILIES = {
    "synthetic_capture": "preprocess",
    "capture_index": "preprocess",
    "frames": "preprocess",
    "views": "preprocess",
    "matting": "preprocess",
    "crop": "preprocess",
    "positions": "preprocess",
    "features": "sapiens",
    "shards": "preprocess",
    "dataset_index": "preprocess",
    "train": "train",
    "evaluate": "train",
    "protocol": "train",
    "gather": "train",
    "report_subject": "preprocess",
    "report_training": "preprocess",
    "report_figures": "preprocess",
}
# Config overrides that switch a rule to another environment (the backend's network needs PyTorch).
BACKEND_CASES = {
    "default": ({}, {}),
    "bgmv2": ({"matting": {"backend": "bgmv2"}}, {"matting": "bgmv2"}),
    "dust3r": ({"positions": {"backend": "dust3r"}}, {"positions": "dust3r"}),
}
# Function-level imports that only run in one subcommand with one backend: (importing module, imported
# module) -> (subcommand, config section, key, value). Every other import, lazy or not, is followed.
GATED = {
    ("avat3r_core.matting.backends", "avat3r_core.models.bgmv2"): ("matting", "matting", "backend", "bgmv2"),
    ("avat3r_core.stages.positions", "avat3r_core.positions.dust3r"): (
        "positions",
        "positions",
        "backend",
        "dust3r",
    ),
}
# Imports that need another distribution than the imported module's own.
IMPLIED = {"torch.utils.tensorboard": "tensorboard"}
# Packages read as data (located with importlib.util.find_spec, never imported).
DATA_PACKAGES = {"avat3r_core.metrics.lpips": ("lpips",)}
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "google_crc32c": "google-crc32c",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
}
# conda-forge package name -> distribution name, where they differ.
CONDA_TO_PYPI = {"pytorch": "torch"}
# Never from conda: conda-forge's pillow is built without libavif (the captures and stores are AVIF), and
# these pull it in; the PyTorch stack comes from PyPI (the CUDA wheels constraints.txt was tested with).
PYPI_ONLY = {"pillow", "torch", "pytorch", "torchvision", "timm", "lpips", "gsplat", "scikit-image"}
EDITABLE = re.compile(r"^--editable \$\{AVAT3R_ROOT\}(?:\[(?P<extras>[a-z0-9_,-]+)\])?$")


# -- reading the environment files and pyproject.toml ------------------------------------------------------


@dataclass(frozen=True)
class Env:
    path: Path
    data: dict

    @property
    def conda(self) -> list[str]:
        return [dep for dep in self.data["dependencies"] if isinstance(dep, str)]

    @property
    def pip(self) -> list[str]:
        sections = [dep["pip"] for dep in self.data["dependencies"] if isinstance(dep, dict)]
        return [line for section in sections for line in section]

    def conda_specs(self) -> dict[str, str]:
        """Conda package name (channel prefix dropped) -> version spec ('' if none)."""
        specs = {}
        for dep in self.conda:
            match = re.match(r"^(?:[\w.-]+::)?([A-Za-z0-9_.-]+)\s*(.*)$", dep)
            assert match, f"{self.path.name}: cannot read conda dependency {dep!r}"
            specs[match.group(1).lower()] = match.group(2).strip()
        return specs

    def pip_requirements(self) -> list[Requirement]:
        return [Requirement(line) for line in self.pip if not line.startswith("-")]

    def extras(self) -> list[str]:
        """The project extras the environment installs (its one `--editable ${AVAT3R_ROOT}[...]` line)."""
        lines = [line for line in self.pip if line.startswith("-")]
        assert len(lines) == 1, (
            f"{self.path.name}: expected one --editable line in the pip section, got {lines}"
        )
        match = EDITABLE.match(lines[0])
        assert match, (
            f"{self.path.name}: {lines[0]!r} should install this checkout as "
            "`--editable ${AVAT3R_ROOT}[...]` (Snakemake creates the environment from a copy of the file, "
            "where a relative path breaks)"
        )
        return match.group("extras").split(",") if match.group("extras") else []

    def declared(self) -> set[str]:
        """Distribution names the environment installs: conda, pip, and the project with its extras."""
        names = {CONDA_TO_PYPI.get(name, canonicalize_name(name)) for name in self.conda_specs()}
        names |= {canonicalize_name(req.name) for req in self.pip_requirements()}
        names |= {canonicalize_name(req.name) for req in project_requirements(self.extras())}
        return names


def load_env(family: str) -> Env:
    path = ENVS / f"{family}.yaml"
    return Env(path, yaml.safe_load(path.read_text()))


def project_requirements(extras: Iterable[str]) -> list[Requirement]:
    """The core dependencies plus those of the extras, self-references (`avat3r[...]`) expanded."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    found = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == canonicalize_name(PROJECT):
                todo.extend(req.extras)
            else:
                found.append(req)
    return found


ENV_FILES = sorted(path.stem for path in ENVS.glob("*.yaml"))


# -- the environment files themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("family", ENV_FILES)
def test_env_file_is_a_solvable_conda_environment(family: str) -> None:
    env = load_env(family)
    assert env.data["channels"] == ["conda-forge", "nodefaults"], f"{family}: channels"
    specs = env.conda_specs()
    python = re.fullmatch(r"=(\d+)\.(\d+)", specs.get("python", ""))
    assert python, f"{family}: pin Python's minor version (python=3.X), got {specs.get('python')!r}"
    floor = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert f"{python[1]}.{python[2]}.0" in floor, f"{family}: python={python[1]}.{python[2]} vs {floor}"
    assert "pip" in specs, f"{family}: conda must install pip for the pip section"
    env.extras()  # exactly one editable install of this checkout
    for name in specs:
        assert name not in PYPI_ONLY, f"{family}: {name} must come from pip (see PYPI_ONLY in this test)"
    assert "pillow" in {canonicalize_name(req.name) for req in env.pip_requirements()}, (
        f"{family}: install pillow with pip (its PyPI wheels carry AVIF; conda-forge's builds do not)"
    )


@pytest.mark.parametrize("family", ENV_FILES)
def test_env_file_spells_out_the_project_requirements(family: str) -> None:
    """Every requirement of the core and the installed extras is listed, with pyproject's bounds, so that
    the environment file is the whole picture and pip adds nothing unlisted."""
    env = load_env(family)
    listed = {
        CONDA_TO_PYPI.get(name, canonicalize_name(name)): spec for name, spec in env.conda_specs().items()
    }
    listed |= {canonicalize_name(req.name): str(req.specifier) for req in env.pip_requirements()}
    for req in project_requirements(env.extras()):
        name = canonicalize_name(req.name)
        assert name in listed, f"envs/{family}.yaml does not list {req} (a requirement of {env.extras()})"
        assert SpecifierSet(listed[name]) == req.specifier, (
            f"envs/{family}.yaml has {name}{listed[name]}, pyproject.toml {req}"
        )


def test_every_family_env_exists_and_is_used() -> None:
    families = set(RULE_FAMILIES.values()) | {
        fam for _, moved in BACKEND_CASES.values() for fam in moved.values()
    }
    assert families == set(ENV_FILES)


def test_core_dependencies_leave_out_pytorch() -> None:
    core = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["project"]["dependencies"]}
    assert not core & {"torch", "torchvision", "timm", "snakemake"}, core


def test_test_extra_installs_every_family() -> None:
    """`pip install -e ".[test]"` (the Makefile, CI) must bring everything the test suite imports."""
    everything = {canonicalize_name(req.name) for req in project_requirements(["test"])}
    for extra in PYPROJECT["project"]["optional-dependencies"]:
        # gpu: gsplat is CUDA only, its tests are skipped without a GPU; fvvdp: FovVideoVDP is CC BY-NC 4.0,
        # opt-in, and its tests are skipped when it is not installed.
        if extra in ("gpu", "fvvdp"):
            continue
        missing = {canonicalize_name(req.name) for req in project_requirements([extra])} - everything
        assert not missing, f"the test extra lacks {missing} from the {extra} extra"


# -- rules and the code they run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleInfo:
    name: str
    env: str  # family: envs/<env>.yaml
    command: str  # the avat3r subcommand


def load_rules(tmp_path: Path, overrides: dict) -> tuple[dict[str, RuleInfo], dict]:
    """The workflow's rules (via the Snakemake API) with their environments, under config + overrides."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    from tests.test_workflow import tiny_config

    config_path = tiny_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    for section, values in overrides.items():
        config[section].update(values)
    config_path.write_text(yaml.safe_dump(config))
    rules = {}
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[config_path]),
            storage_settings=StorageSettings(),
            snakefile=REPO_ROOT / "Snakefile",
            workdir=tmp_path,
        )
        for rule in workflow._workflow.rules:
            if rule.name == "all":
                continue
            assert rule.conda_env, f"rule {rule.name} names no conda environment"
            path = (Path(rule.basedir.get_path_or_uri(secret_free=True)) / rule.conda_env).resolve()
            assert path.parent == ENVS and path.is_file(), f"rule {rule.name}: {rule.conda_env} -> {path}"
            match = re.search(r"(?:\bavat3r|\{params\.launcher\})\s+([a-z][a-z-]*)", rule.shellcmd or "")
            assert match, f"rule {rule.name} does not run an avat3r subcommand: {rule.shellcmd!r}"
            rules[rule.name] = RuleInfo(rule.name, path.stem, match.group(1))
    return rules, config


@pytest.fixture(scope="module")
def workflows(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[dict[str, RuleInfo], dict]]:
    """Rules and config of each case in BACKEND_CASES, each workflow loaded once."""
    loaded: dict[str, tuple[dict[str, RuleInfo], dict]] = {}

    def get(case: str) -> tuple[dict[str, RuleInfo], dict]:
        if case not in loaded:
            loaded[case] = load_rules(tmp_path_factory.mktemp(case), BACKEND_CASES[case][0])
        return loaded[case]

    return get


@pytest.mark.parametrize("case", sorted(BACKEND_CASES))
def test_each_rule_uses_its_family_env(case: str, workflows) -> None:
    _, moved = BACKEND_CASES[case]
    rules, _ = workflows(case)
    assert set(rules) == set(RULE_FAMILIES), "a rule was added or removed: give it a family in RULE_FAMILIES"
    expected = RULE_FAMILIES | moved
    assert {name: rule.env for name, rule in rules.items()} == expected


def module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def read_module(module: str) -> str:
    return module_file(module).read_text()


@functools.cache
def parsed_module(module: str) -> ast.Module:
    return ast.parse(read_module(module))


@dataclass
class ImportWalk:
    """Third-party imports reachable from a set of avat3r_core modules (and a few statements)."""

    config: dict
    command: str | None = None  # the avat3r subcommand, for GATED
    source: Callable[[str], str] = read_module
    third_party: dict[str, str] = field(default_factory=dict)  # distribution -> the chain that imports it
    modules: dict[str, str] = field(default_factory=dict)  # avat3r_core module -> the chain that reached it

    def add_statements(self, nodes: Iterable[ast.AST], origin: str, package: str = "avat3r_core") -> None:
        for node in nodes:
            for sub in ast.walk(node):
                self._visit(sub, origin, package, current=None)

    def add_module(self, module: str, chain: str) -> None:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a.b.c
            name = ".".join(parts[:i])
            if name in self.modules or module_file(name) is None:
                continue
            self.modules[name] = chain
            path = module_file(name)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for data in DATA_PACKAGES.get(name, ()):
                self.third_party.setdefault(data, f"{chain} -> {name} (package data)")
            tree = parsed_module(name) if self.source is read_module else ast.parse(self.source(name))
            for sub in ast.walk(tree):
                self._visit(sub, f"{chain} -> {name}", package, current=name)

    def _visit(self, node: ast.AST, chain: str, package: str, current: str | None) -> None:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base]
            if base.startswith("avat3r_core"):  # `from package import submodule`
                targets += [
                    f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}")
                ]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target.split(".")[0] == "avat3r_core":
                gate = GATED.get((current, target))
                if gate is None or (self.command == gate[0] and self.config[gate[1]][gate[2]] == gate[3]):
                    self.add_module(target, chain)
                continue
            for name in (IMPLIED.get(target), target.split(".")[0]):
                if name and name not in sys.stdlib_module_names and name != "__future__":
                    dist = canonicalize_name(DISTRIBUTIONS.get(name, name))
                    self.third_party.setdefault(dist, f"{chain} imports {target}")


def cli_function(command: str) -> ast.FunctionDef:
    tree = parsed_module("avat3r_core.cli")
    name = "cmd_" + command.replace("-", "_")
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    assert found, f"avat3r_core/cli.py has no {name} for `avat3r {command}`"
    return found[0]


def walk_rule(rule: RuleInfo, config: dict, source: Callable[[str], str] | None = None) -> ImportWalk:
    """The CLI's module-level imports and those of the rule's subcommand function, followed through the
    package (the other subcommands' function-level imports do not run)."""
    walk = ImportWalk(config, rule.command) if source is None else ImportWalk(config, rule.command, source)
    origin = f"`avat3r {rule.command}`"
    walk.add_module("avat3r_core", origin)
    walk.modules["avat3r_core.cli"] = origin  # walked statement by statement below, never as a whole
    tree = parsed_module("avat3r_core.cli")
    walk.add_statements([node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)], origin)
    walk.add_statements(cli_function(rule.command).body, origin)
    return walk


def undeclared(rule: RuleInfo, walk: ImportWalk) -> list[str]:
    declared = load_env(rule.env).declared()
    return [
        f"rule {rule.name} (envs/{rule.env}.yaml) lacks {dist}: {chain}"
        for dist, chain in sorted(walk.third_party.items())
        if dist not in declared
    ]


@pytest.mark.parametrize("case", sorted(BACKEND_CASES))
def test_each_env_declares_what_its_rules_import(case: str, workflows) -> None:
    rules, config = workflows(case)
    problems = [line for rule in rules.values() for line in undeclared(rule, walk_rule(rule, config))]
    assert not problems, "\n".join(problems)


def test_import_walk_sees_the_stage_code(workflows) -> None:
    """The walk reaches what the stages really import (and would catch a new import)."""
    rules, config = workflows("default")
    features = walk_rule(rules["features"], config).third_party
    assert {"torch", "timm", "pillow", "zarr", "numpy"} <= set(features)
    train = walk_rule(rules["train"], config).third_party
    assert {"torch", "torchvision", "tensorboard", "lpips", "gsplat", "packaging"} <= set(train)
    shards = walk_rule(rules["shards"], config)
    assert "avat3r_core.stages.shards" in shards.modules and "torch" not in shards.third_party

    # A new third-party import in a CPU stage module fails, naming the rule, the environment and the chain.
    def patched(module: str) -> str:
        text = module_file(module).read_text()
        return "import foo_codec\n" + text if module == "avat3r_core.stages.frames" else text

    problems = undeclared(rules["frames"], walk_rule(rules["frames"], config, patched))
    assert problems == [
        "rule frames (envs/preprocess.yaml) lacks foo-codec: `avat3r frames` -> avat3r_core.stages.frames "
        "imports foo_codec"
    ]

    # So does a CPU stage reaching PyTorch through another stage module (shards once took a constant from
    # the features stage, which imports torch at module level).
    def via_features(module: str) -> str:
        text = module_file(module).read_text()
        if module == "avat3r_core.stages.shards":
            return text.replace(
                "from avat3r_core.stages import TOKEN_PATCH",
                "from avat3r_core.stages.features import TOKEN_PATCH",
            )
        return text

    problems = undeclared(rules["shards"], walk_rule(rules["shards"], config, via_features))
    assert any(line.startswith("rule shards (envs/preprocess.yaml) lacks torch:") for line in problems), (
        problems
    )


def test_cpu_rules_import_no_pytorch(workflows) -> None:
    """Cross-check of the walk at run time: the preprocess family's modules import without torch."""
    rules, config = workflows("default")
    modules = sorted(
        {m for rule in rules.values() if rule.env == "preprocess" for m in walk_rule(rule, config).modules}
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(k for k in ('torch', 'torchvision', 'timm') if k in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_snakemake_process_needs_only_the_workflow_extra() -> None:
    """The Snakefile and rules/*.smk import the package in the Snakemake process itself (no conda env):
    `pip install -e ".[workflow]"` must cover that."""
    walk = ImportWalk(yaml.safe_load((REPO_ROOT / "config.yaml").read_text()))
    pattern = re.compile(r"^\s*(?:from\s+(avat3r_core[\w.]*)\s+import|import\s+(avat3r_core[\w.]*))", re.M)
    for path in [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "rules").glob("*.smk"))]:
        for match in pattern.finditer(path.read_text()):
            walk.add_module(match.group(1) or match.group(2), path.name)
    declared = {canonicalize_name(req.name) for req in project_requirements(["workflow"])}
    missing = {dist: chain for dist, chain in walk.third_party.items() if dist not in declared}
    assert not missing, missing
