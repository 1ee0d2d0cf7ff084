"""``python -m services.orchestrator.flow [--update-doc]``: print or refresh the graph drawing."""

from __future__ import annotations

import argparse

from services.orchestrator.flow.graph import DOC, mermaid, update_doc


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The incident graph as Mermaid (build_graph(None).get_graph())."
    )
    parser.add_argument(
        "--update-doc", action="store_true", help=f"rewrite the ```mermaid block in {DOC.name}"
    )
    if parser.parse_args().update_doc:
        update_doc()
    else:
        print(mermaid(), end="")


if __name__ == "__main__":
    main()
