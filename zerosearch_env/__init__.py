"""zerosearch-env: a Gymnasium environment for training LLM search agents against a simulated
search engine, with real search backends to swap in."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from zerosearch_env.config import EnvConfig
from zerosearch_env.env import SearchEnv
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest
from zerosearch_env.vector_env import SearchVectorEnv, make_vec

__all__ = ["EnvConfig", "SearchEnv", "SearchVectorEnv", "make_vec", "Document", "SearchBackend", "SearchRequest"]
__version__ = "0.1.0"

if "zerosearch/Search-v0" not in registry:
    register(id="zerosearch/Search-v0", entry_point="zerosearch_env.env:SearchEnv", disable_env_checker=True)
