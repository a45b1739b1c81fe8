"""`python -m pipeline` is the same CLI as `augment`."""
from stages.cli import main

if __name__ == "__main__":
    main()
