"""The crawl stage: its sources (Fashion-MNIST, a folder, a Moebooru board) and the one HTTP client."""
