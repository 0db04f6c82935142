"""A benchmark suite: the YAML that names the runs behind one paper table.

A suite file (``beyondkd/configs/bench/<name>.yaml``, or any path) holds::

    name: fmnist-cpu
    description: what it measures and on what budget
    table: ablation            # table1 | ablation | plugin | slkd | imagenet | detection | regime: the table's shape
    source: BTKD Table 5       # where the paper numbers come from (optional)
    seeds: [0, 1, 2]           # default seeds (``--seeds`` replaces them)
    overrides: [train.epochs=3]   # applied to every run of the suite, teachers included
    groups:                    # one block of the table per teacher/student pair
      - name: resnet20 -> resnet8
        overrides: []          # applied to every row of this group (not to its teacher)
        teacher:               # trained once, unless ``checkpoint`` already exists
          config: configs/fmnist/teacher.yaml
          checkpoint: runs/fmnist_teacher_resnet20/best.pt
          paper: {acc: 79.34, source: BTKD Table 1}
        rows:
          - label: KD
            config: configs/kd.yaml
            overrides: [method.params.temperature=4]
            baseline: CE           # Δ is measured against this row (or the best of a list)
            paper: {acc: 71.56, source: BTKD Table 1}
            seeds: [0, 1, 2, 3, 4] # optional: this row's own seeds

A row's config that holds a ``model:`` section is trained on labels (``train-teacher``); one
with ``student:`` is distilled. A detection config (its networks name a ``backbone``,
``configs/detection/``) is trained by the detection trainer (``beyondkd detect``). ``optional: true`` lets a row be dropped, with a note, when its
config is not installed (methods that other packages add). Every mistake in a suite is one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from beyondkd.config import PACKAGE_CONFIGS, StrictSection, parse_yaml_file, validate_as
from beyondkd.errors import ConfigError, suggest

SUITES_DIR = PACKAGE_CONFIGS / "bench"
TableShape = Literal["table1", "ablation", "plugin", "slkd", "imagenet", "detection", "regime"]


class PaperNumber(StrictSection):
    """The numbers a paper prints for a row, with the table they come from.

    ``acc`` is the table's main number: top-1 accuracy (%), or box AP (%) in a detection table;
    ``top5`` (ImageNet tables), ``ap50`` and ``ap75`` (detection) are the extra columns.
    """

    acc: float = Field(ge=0.0, le=100.0)
    top5: float | None = Field(None, ge=0.0, le=100.0)
    ap50: float | None = Field(None, ge=0.0, le=100.0)
    ap75: float | None = Field(None, ge=0.0, le=100.0)
    source: str


class TeacherSpec(StrictSection):
    """The teacher of a group: a trained checkpoint, or the config that trains it."""

    config: str
    overrides: list[str] = Field(default_factory=list)
    checkpoint: str | None = Field(None, description="use this file if it exists instead of training the teacher")
    paper: PaperNumber | None = None


class RowSpec(StrictSection):
    """One line of the table: a packaged config trained over every seed."""

    label: str
    config: str
    overrides: list[str] = Field(default_factory=list)
    baseline: Union[str, list[str], None] = Field(None, description="row label(s) Δ is measured against (the best of a list)")
    paper: PaperNumber | None = None
    optional: bool = False
    seeds: list[int] | None = Field(None, min_length=1, description="this row's seeds (default: the suite's); --seeds replaces both")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @property
    def baselines(self) -> list[str]:
        if self.baseline is None:
            return []
        return [self.baseline] if isinstance(self.baseline, str) else list(self.baseline)


class GroupSpec(StrictSection):
    """A block of rows sharing a teacher (one teacher/student pair of a paper table)."""

    name: str
    description: str = ""
    teacher: TeacherSpec | None = None
    overrides: list[str] = Field(default_factory=list, description="applied to every row of the group (not its teacher)")
    rows: list[RowSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _labels(self) -> "GroupSpec":
        labels = [r.label for r in self.rows]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"group '{self.name}' repeats row label(s) {dup}: labels must be unique within a group")
        for row in self.rows:
            for b in row.baselines:
                if b not in labels:
                    raise ValueError(f"row '{row.label}' of group '{self.name}' has baseline '{b}'{suggest(b, labels)}, which is not a row of that group")
                if b == row.label:
                    raise ValueError(f"row '{row.label}' of group '{self.name}' is its own baseline")
        return self


class Suite(StrictSection):
    """A whole suite (see the module docstring)."""

    name: str
    description: str = ""
    table: TableShape = "table1"
    source: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    teacher_seed: int = 0
    overrides: list[str] = Field(default_factory=list)
    target_fraction: float = Field(0.99, gt=0.0, le=1.0, description="epochs-to-target: the first epoch reaching this fraction of KD's final accuracy")
    groups: list[GroupSpec] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @model_validator(mode="after")
    def _groups(self) -> "Suite":
        names = [g.name for g in self.groups]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise ValueError(f"group name(s) {dup} repeat: group names must be unique")
        slugs = [slug(n) for n in names]
        if len(set(slugs)) != len(slugs):
            raise ValueError("two group names give the same folder name: make them differ in letters or digits")
        for g in self.groups:
            row_slugs = [slug(r.label) for r in g.rows]
            if len(set(row_slugs)) != len(row_slugs) or "teacher" in row_slugs:
                raise ValueError(f"two row labels of group '{g.name}' give the same folder name (or one is 'teacher'): rename them")
        return self


def slug(text: str) -> str:
    """A folder name for a label: ``KD + BTKD (paper)`` -> ``kd-btkd-paper``."""
    s = re.sub(r"[^a-z0-9_.]+", "-", text.lower().replace("+", " plus ")).strip("-.")
    return re.sub(r"-+", "-", s) or "x"


def suite_names() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(name_or_path: str | Path) -> Path:
    """The file of a packaged suite name, or the given path; one-line error if neither exists."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    packaged = SUITES_DIR / f"{p.stem if p.suffix in ('.yaml', '.yml') else p.name}.yaml"
    if packaged.is_file():
        return packaged
    names = suite_names()
    raise ConfigError(f"unknown suite '{name_or_path}'{suggest(str(name_or_path), names)}: choose one of {', '.join(names)} (beyondkd bench --list) or give a suite YAML path")


def parse_suite(raw: object, source: str = "suite") -> Suite:
    """Validate a suite mapping with a one-line error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a suite must be a YAML mapping with 'name' and 'groups'")
    return validate_as(Suite, raw, source)


def load_suite(name_or_path: str | Path) -> Suite:
    """Read and validate a suite by packaged name (``fmnist-cpu``) or path."""
    path = suite_path(name_or_path)
    return parse_suite(parse_yaml_file(path), str(path))
