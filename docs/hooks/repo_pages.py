"""MkDocs hook: pages whose one home is elsewhere in the repository, and the topic pages.

- ``architecture.md``: the "Architecture" section of ``README.md`` (from its heading to
  the next heading of the same level).
- ``benchmarks/README.md`` and ``benchmarks/results/*.md|*.png``: the benchmark summary
  and the committed results it points to.

- The "Topics" section of the nav lists those of ``TOPIC_PAGES`` that exist under
  ``docs/``, after the user guide, so that a topic page is added by writing it (and
  naming it here) and the build never refers to a page that is not there yet.

The files are read at build time, so the site never holds a second copy that could
drift. A relative link in a mirrored page that points at nothing on the site (a
script, a JSON file, a path outside the mirrored folders) becomes plain code text
naming the repository path, so such a link never breaks ``mkdocs build --strict``;
links in the hand-written pages under ``docs/`` are checked as usual.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[2]
README_SECTION = "Architecture"
MIRRORED_DIRS = {"benchmarks/results": ("*.md", "*.png")}
TOPIC_PAGES = ("torchdyn.md", "flow_matching.md", "stiff.md")
TOPICS_AFTER = "User guide"
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def readme_section(title: str) -> str:
    """The README section headed ``## title``, up to the next ``## `` heading."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {title}"), None)
    if start is None:
        raise ValueError(f"README.md has no '## {title}' section for docs/architecture.md")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
    )
    body = "\n".join(lines[start + 1 : end]).strip("\n")
    return f"# {title}\n\n{body}\n"


def relink(text: str, page_dir: str, repo_dir: str, site_paths: set[str]) -> str:
    """Keep relative links that resolve to a site file; turn the others into code text.

    ``page_dir`` is the page's folder on the site, ``repo_dir`` its folder in the
    repository (for naming the path a dropped link pointed at).
    """

    def replace(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path = target.partition("#")[0]
        if posixpath.normpath(posixpath.join(page_dir, path)) in site_paths:
            return match.group(0)
        repo_path = posixpath.normpath(posixpath.join(repo_dir, path))
        if bang:
            return f"(figure `{repo_path}`)"
        shown = label.strip("`")
        return f"`{shown}`" if shown == repo_path else f"{label} (`{repo_path}`)"

    return LINK.sub(replace, text)


def on_config(config):
    present = [page for page in TOPIC_PAGES if (Path(config["docs_dir"]) / page).is_file()]
    nav = config["nav"]
    if present and nav is not None:
        titles = [next(iter(item)) if isinstance(item, dict) else None for item in nav]
        where = titles.index(TOPICS_AFTER) + 1 if TOPICS_AFTER in titles else len(nav)
        nav.insert(where, {"Topics": present})
    return config


def on_files(files: Files, config) -> Files:
    mirrored: dict[str, Path] = {"benchmarks/README.md": ROOT / "benchmarks" / "README.md"}
    for folder, patterns in MIRRORED_DIRS.items():
        for pattern in patterns:
            for path in sorted((ROOT / folder).glob(pattern)):
                mirrored[f"{folder}/{path.name}"] = path
    site_paths = {f.src_uri for f in files} | set(mirrored) | {"architecture.md"}

    files.append(
        File.generated(
            config,
            "architecture.md",
            content=relink(readme_section(README_SECTION), "", "", site_paths),
        )
    )
    for uri, path in mirrored.items():
        if path.suffix == ".md":
            folder = posixpath.dirname(uri)
            text = relink(path.read_text(encoding="utf-8"), folder, folder, site_paths)
            # results pages are reached from the benchmark summary, not from the nav
            inclusion = (InclusionLevel.INCLUDED if uri == "benchmarks/README.md"
                         else InclusionLevel.NOT_IN_NAV)
            files.append(File.generated(config, uri, content=text, inclusion=inclusion))
        else:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
