"""Every public name is documented: it has a docstring and a place in the API reference.

Public names are those in ``lossfn.__all__`` and in the ``__all__`` of every module of
the package without a leading underscore. The API reference pages (docs/api/*.md) hold
mkdocstrings directives ``::: path``; a name counts as placed when a directive renders it
(its module, or the name itself). When mkdocs is installed the site is also built with
``--strict`` and every placed name must appear as an anchor in the HTML.
"""

import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lossfn

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def public_modules():
    yield lossfn
    for info in pkgutil.walk_packages(lossfn.__path__, "lossfn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        yield importlib.import_module(info.name)


def public_names():
    for module in public_modules():
        for name in getattr(module, "__all__", ()):
            yield module, name, getattr(module, name)


def resolve(path):
    """The object a directive path names: a module, or an attribute of one."""
    try:
        return importlib.import_module(path)
    except ImportError:
        parent, _, attr = path.rpartition(".")
        return getattr(importlib.import_module(parent), attr)


def directives():
    found = {}
    for page in sorted(API.glob("*.md")):
        for path in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            found[path] = page.name
    return found


def rendered():
    """(directive path, object, anchor) of everything the directives render."""
    out = []
    for path in directives():
        target = resolve(path)
        out.append((path, target, path))
        if inspect.ismodule(target) and path != "lossfn":
            for name in getattr(target, "__all__", ()):
                out.append((f"{path}.{name}", getattr(target, name), f"{path}.{name}"))
    return out


def test_every_public_name_has_a_docstring():
    missing = []
    for module, name, obj in public_names():
        if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
            if not (inspect.getdoc(obj) or "").strip():
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without a docstring: {missing}"


def test_every_public_name_is_in_the_api_reference():
    placed = rendered()
    missing = []
    for module, name, obj in public_names():
        if not any(target is obj for _, target, _ in placed):
            missing.append(f"{module.__name__}.{name}")
    assert not missing, (
        f"public names missing from docs/api/*.md: {missing}; add a '::: module' directive "
        "for their module (or '::: module.name') to an API page")


def test_every_api_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in API.glob("*.md"):
        assert f"api/{page.name}" in nav, page.name


@pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install 'lossfn[docs]')")
def test_mkdocs_build_strict_renders_every_name(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    html = "\n".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    shown = [target for _, target, anchor in rendered() if f'id="{anchor}"' in html]
    absent = [f"{module.__name__}.{name}" for module, name, obj in public_names()
              if not any(target is obj for target in shown)]
    assert not absent, f"public names with no anchor in the built API pages: {absent}"
