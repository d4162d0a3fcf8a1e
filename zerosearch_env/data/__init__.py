"""Data: the built-in fictional world and loaders for real QA sets and corpora."""

from __future__ import annotations

from zerosearch_env.data.task import Task, select_split

__all__ = ["Task", "load_tasks", "load_corpus"]


def load_tasks(dataset: str = "world", split: str = "train", world_seed: int = 0) -> list[Task]:
    """Tasks of `split` ("train", "test", another split the file names, or "all") from the built-in
    world or a QA file. A split the data lacks raises a ValueError naming the splits it has; a file
    whose rows carry no split is split by question (see `zerosearch_env.data.loaders.hashed_split`)."""
    if dataset == "world":
        from zerosearch_env.data.world import generate_world

        return generate_world(world_seed).split(split)
    from zerosearch_env.data.loaders import load_qa_file

    return select_split(load_qa_file(dataset), split, dataset)


def load_corpus(dataset: str = "world", world_seed: int = 0, path: str | None = None):
    """Documents of the built-in world's encyclopedia, or of a corpus file (`path`)."""
    if path is not None:
        from zerosearch_env.data.loaders import load_corpus_file

        return load_corpus_file(path)
    if dataset != "world":
        raise ValueError("a corpus for a non-world dataset needs an explicit corpus path")
    from zerosearch_env.data.world import generate_world

    return list(generate_world(world_seed).documents)
