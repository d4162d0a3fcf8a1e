"""Data: the built-in fictional world and loaders for real QA sets and corpora."""

from __future__ import annotations

from zerosearch_env.data.task import Task

__all__ = ["Task", "load_tasks", "load_corpus"]


def load_tasks(dataset: str = "world", split: str = "train", world_seed: int = 0) -> list[Task]:
    """Tasks of `split` ("train", "test" or "all") from the built-in world or a file."""
    if dataset == "world":
        from zerosearch_env.data.world import generate_world

        world = generate_world(world_seed)
        return list(world.tasks) if split == "all" else [t for t in world.tasks if t.split == split]
    from zerosearch_env.data.loaders import load_qa_file

    tasks = load_qa_file(dataset)
    return tasks if split == "all" else [t for t in tasks if t.split == split] or tasks


def load_corpus(dataset: str = "world", world_seed: int = 0, path: str | None = None):
    """Documents of the built-in world's encyclopedia, or of a corpus file (`path`)."""
    if path is not None:
        from zerosearch_env.data.loaders import load_corpus_file

        return load_corpus_file(path)
    if dataset != "world":
        raise ValueError("a corpus for a non-world dataset needs an explicit corpus path")
    from zerosearch_env.data.world import generate_world

    return list(generate_world(world_seed).documents)
