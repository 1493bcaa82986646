"""``python -m tsp_cli`` runs the same CLI as the ``tsp`` console script."""

from tsp_cli.cli.app import main

if __name__ == "__main__":
    main()
