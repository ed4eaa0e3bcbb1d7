"""The script ``streamlit run`` executes for the leaderboard (``kdbench app`` runs this file
from the installed package); everything is in :mod:`kdbench.app`.

Streamlit puts this file's folder first on ``sys.path``: the package's modules are imported
as ``kdbench.app.<module>`` only, so none of their names may shadow a top-level module.
"""

from kdbench.app import main

main()
