"""The typed context every page gets: what one rerun read and chose, built once per rerun
(:func:`make_context`) and passed to the page's ``render``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdbench import economics
from kdbench import leaderboard as lb
from kdbench.verify import division


def with_submissions(view: pd.DataFrame, suite_hash: str) -> pd.DataFrame:
    """A ranked view with ``submitter`` (:data:`kdbench.leaderboard.LOCAL` for the database's
    own runs), ``division`` (``closed`` when the suite is one shipped in ``leaderboards/``,
    :func:`kdbench.verify.division`, else ``open``) and ``verified`` (imported through
    ``kdbench import``, which verifies each bundle; local rows are not verified)."""
    view = view.copy()
    if "submitter" not in view:
        view["submitter"] = lb.LOCAL
    view["division"] = division(suite_hash)[0]
    view["verified"] = (view["submitter"] != lb.LOCAL).astype(bool)
    return view


def _chosen(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """A multiselect's values as a tuple; nothing chosen (or None) means no filter (None)."""
    return tuple(values) if values else None


@dataclass(frozen=True)
class Filters:
    """The sidebar's method / family / student / submitter filters; None: that filter is
    off (the submitter filter applies to the chosen suite's board only)."""

    methods: tuple[str, ...] | None = None
    families: tuple[str, ...] | None = None
    students: tuple[str, ...] | None = None
    submitters: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        methods: Sequence[str] | None = None,
        families: Sequence[str] | None = None,
        students: Sequence[str] | None = None,
        submitters: Sequence[str] | None = None,
    ) -> Filters:
        """Filters from widget values (an empty selection is no filter)."""
        return cls(_chosen(methods), _chosen(families), _chosen(students), _chosen(submitters))

    def as_kwargs(self) -> dict[str, tuple[str, ...] | None]:
        """The keyword arguments of :func:`kdbench.leaderboard.rank_board` and
        :func:`kdbench.leaderboard.open_track`."""
        return {"methods": self.methods, "families": self.families, "students": self.students}


# eq=False: the fields are data frames, which have no truth value to compare by
@dataclass(frozen=True, eq=False)
class AppContext:
    """What the pages read: the database, the suites, the chosen suite's ranked view and its
    inputs, and the price table."""

    db: Path  # the results database, opened read-only
    suites: pd.DataFrame  # every suite, newest first (kdbench.leaderboard.suites)
    suite: pd.Series  # the chosen suite's row of ``suites``
    teacher: str | None  # the sidebar's teacher (None: all teachers)
    board: pd.DataFrame  # the chosen suite's board, unfiltered (empty: no successful run)
    view: pd.DataFrame  # the board filtered and re-ranked (kdbench.leaderboard.rank_board)
    tasks: tuple[str, ...]  # the board's tasks
    task_meta: pd.DataFrame  # each task's primary metric, direction and aggregation
    failed: pd.DataFrame  # the suite's failed runs
    prices_path: Path  # the price table file asked for (--prices, $KDBENCH_PRICES, default)
    prices: economics.PriceTable | None = None  # None: the file was unreadable or malformed
    filters: Filters = field(default_factory=Filters)

    @property
    def suite_hash(self) -> str:
        """The chosen suite's hash."""
        return str(self.suite["suite_hash"])

    @property
    def priced_with(self) -> str | None:
        """The price table the boards were priced with (None: no prices); the cache key of
        :func:`kdbench.app.data.load_data`."""
        return str(self.prices_path) if self.prices is not None else None

    @property
    def has_runs(self) -> bool:
        """Whether the suite has a successful run (every page but Run needs one)."""
        return not self.board.empty


def make_context(
    db: Path,
    suites: pd.DataFrame,
    suite: pd.Series,
    data: lb.SuiteData,
    *,
    teacher: str | None = None,
    filters: Filters | None = None,
    prices: economics.PriceTable | None = None,
    prices_path: Path = economics.DEFAULT_PRICES,
) -> AppContext:
    """The context of one rerun from the suite's :class:`~kdbench.leaderboard.SuiteData`
    (read for ``suite`` alone): its board ranked with ``filters``, its tasks and failed runs."""
    filters = filters or Filters()
    board = data.boards[suite["suite_hash"]]
    return AppContext(
        db=Path(db),
        suites=suites,
        suite=suite,
        teacher=teacher,
        board=board,
        view=with_submissions(
            lb.rank_board(board, **filters.as_kwargs(), submitters=filters.submitters),
            str(suite["suite_hash"]),
        ),
        tasks=tuple(lb.board_tasks(board)) if not board.empty else (),
        task_meta=data.tasks.drop(columns="suite_hash"),
        failed=data.failed,
        prices_path=Path(prices_path),
        prices=prices,
        filters=filters,
    )
