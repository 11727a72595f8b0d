"""``s4digits db upgrade``, ``s4digits feedback export DIR``, ``s4digits promote CANDIDATE``.

They read the database directly (S4_DATABASE_URL, or --database-url), not through the service.
"""

import argparse
import sys
from pathlib import Path

PROG = "s4digits"


def add_parsers(commands: argparse._SubParsersAction) -> None:
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", help="the corrections' database (else S4_DATABASE_URL)")

    db_parser = commands.add_parser("db", help="the corrections' database")
    db_commands = db_parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade_parser = db_commands.add_parser(
        "upgrade", parents=[database], help="create or migrate its tables (the service also does)"
    )
    upgrade_parser.set_defaults(run=upgrade)

    feedback_parser = commands.add_parser("feedback", help="the corrections people sent")
    feedback_commands = feedback_parser.add_subparsers(
        dest="feedback_command", required=True, metavar="COMMAND"
    )
    export_parser = feedback_commands.add_parser(
        "export",
        parents=[database],
        help="write them as MNIST IDX files",
        description="Write every stored digit and its label as MNIST-format IDX files "
        "(feedback-images-idx3-ubyte, feedback-labels-idx1-ubyte) in DIR.",
    )
    export_parser.add_argument("dir", type=Path, metavar="DIR")
    export_parser.set_defaults(run=export)

    promote_parser = commands.add_parser(
        "promote",
        parents=[database],
        help="serve a candidate's weights if they are better (else leave weights/ alone)",
        description="Replace the served weights (S4_WEIGHTS, or --weights) with CANDIDATE's only "
        "if CANDIDATE reads the MNIST test set at most 0.05 points worse and the corrections its "
        "--feedback training run held out better. Exit status 1 when it is not promoted.",
    )
    promote_parser.add_argument(
        "candidate", type=Path, metavar="CANDIDATE", help="python -m training's --out-dir"
    )
    promote_parser.add_argument("--weights", type=Path, help="served weights (else S4_WEIGHTS)")
    promote_parser.add_argument("--data-dir", type=Path, help="MNIST (else $S4_DATA_DIR)")
    promote_parser.set_defaults(run=promote)


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def database_url(args: argparse.Namespace) -> str:
    from app.settings import Settings

    return args.database_url or Settings().database_url


def upgrade(args: argparse.Namespace) -> int:
    from app.feedback.store import DatabaseError, display_url, migrate

    url = database_url(args)
    try:
        count = migrate(url)
    except DatabaseError as exc:
        return fail(f"cannot migrate: {exc}")
    print(f"{display_url(url)}: schema up to date, {count} corrections")
    return 0


def export(args: argparse.Namespace) -> int:
    from app.feedback.idx import write_idx
    from app.feedback.store import DatabaseError, stored_digits

    try:
        digits = stored_digits(database_url(args))
    except DatabaseError as exc:
        return fail(f"cannot read: {exc}")
    paths = write_idx(args.dir, digits)
    print(f"wrote {len(digits)} digits: {', '.join(str(path) for path in paths)}")
    return 0


def promote(args: argparse.Namespace) -> int:
    from app.feedback.promote import PromotionError
    from app.feedback.promote import promote as judge
    from app.feedback.store import DatabaseError
    from app.settings import Settings
    from training.mnist import TEST_IMAGES, TEST_LABELS, MnistError, read_idx, resolve_data_dir

    try:
        data_dir = resolve_data_dir(args.data_dir, None)
        mnist = (
            read_idx(data_dir / TEST_IMAGES.name, TEST_IMAGES).numpy(),
            read_idx(data_dir / TEST_LABELS.name, TEST_LABELS).numpy().astype("int64"),
        )
        served = args.weights or Settings().weights
        verdict = judge(args.candidate, served, database_url(args), mnist)
    except (PromotionError, MnistError, DatabaseError) as exc:
        return fail(f"not promoted: {exc}")
    print("\n".join(verdict.report))
    return 0 if verdict.promoted else 1
