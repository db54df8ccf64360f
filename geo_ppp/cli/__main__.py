"""``python -m geo_ppp.cli``: the same as the ``geo-ppp`` command."""

from geo_ppp.cli.main import main

main()
