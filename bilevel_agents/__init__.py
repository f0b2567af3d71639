"""bilevel_agents: leaders for decentralized bi-level RL (BC-HG and baselines)."""
