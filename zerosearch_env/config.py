"""`EnvConfig`: every knob of the environment, read the same way from code, YAML and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def read_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML (.yaml/.yml) or JSON file, with a clear error otherwise."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


class EnvConfig(BaseModel):
    """Configuration of `SearchEnv` / `SearchVectorEnv`.

    `dataset` is "world" (the built-in fictional world, generated from `world_seed`) or a path to
    a FlashRAG-style JSONL / Search-R1 parquet file. `backend` names a search backend ("bm25",
    "simulator", "dense", "retriever", "web"); `backend_options` are passed to its `from_config`.
    For the simulator, `backend_options["knowledge"]` says what it knows about a query: "world"
    (the default for the built-in world: the facts of the entities the query names), "answer_hint"
    (the default for a loaded data set: the question, and the gold answer once the query reaches
    the answer-bearing article), "none" (the engine's own memory) or "oracle" (an ablation: the
    answer in every useful result whatever the query); see `SimulatedSearch.from_config`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    dataset: str = "world"
    world_seed: int = 0
    split: Literal["train", "test", "all"] = "train"

    # episode
    max_turns: int = Field(4, ge=1, le=64)
    max_invalid_streak: int | None = Field(None, ge=1, description=(
        "truncate an episode after this many invalid actions in a row (None: only max_turns ends it). "
        "Evaluating a model that never writes a tag (an untrained base model) then stops early"))
    top_k: int = Field(3, ge=1, le=50)
    max_doc_chars: int = Field(600, ge=16)
    max_obs_chars: int = Field(4000, ge=256)
    max_action_chars: int = Field(1 << 20, ge=64, description="longest turn the action space admits")
    max_query_chars: int = Field(512, ge=8)
    max_answer_chars: int = Field(1024, ge=8)

    # reward
    reward: Literal["f1", "em"] = "f1"
    max_length_ratio: float | None = Field(3.0, gt=0)
    calibration: bool = Field(False, description="ask for <confidence>q</confidence> after the answer")

    # search
    backend: str = "bm25"
    backend_options: dict[str, Any] = Field(default_factory=dict)

    seed: int | None = None

    @model_validator(mode="after")
    def _caps(self) -> "EnvConfig":
        if self.max_doc_chars > self.max_obs_chars:
            raise ValueError("max_doc_chars cannot exceed max_obs_chars")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> "EnvConfig":
        """Read a YAML or JSON file (the whole file, or its `env:` section)."""
        data = read_mapping(path)
        return cls.model_validate(data.get("env", data))

    def updated(self, **overrides: Any) -> "EnvConfig":
        return self.model_validate({**self.model_dump(), **overrides})
