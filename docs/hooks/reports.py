"""MkDocs hook: the training run's figures (``reports/*.png``, outside docs/) join the site.

They keep their one home in reports/, where ``python -m training`` and ``bench.numbers`` write
them; pages link them as ``reports/NAME.png``, like their own images.
"""

from pathlib import Path

from mkdocs.structure.files import File

REPORTS = "reports"


def on_files(files, config):
    repository = Path(config.config_file_path).parent
    for figure in sorted((repository / REPORTS).glob("*.png")):
        files.append(File.generated(config, f"{REPORTS}/{figure.name}", abs_src_path=str(figure)))
    return files
