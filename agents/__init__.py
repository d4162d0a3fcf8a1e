"""Agents: policies, multi-turn rollouts, trainers, baselines and the `zerosearch` command line."""
