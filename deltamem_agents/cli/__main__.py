"""``python -m deltamem_agents.cli``: the `deltamem` command (the demo starts its processes this way)."""

from deltamem_agents.cli import main

if __name__ == "__main__":
    main()
