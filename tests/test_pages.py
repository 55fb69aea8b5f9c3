"""Page rendering, byte for byte against docs/design.md, Pages."""

import json

from bandersnatch_classic import pages
from bandersnatch_classic.models import Project

SHA_A = "a" * 64
SHA_M = "b" * 64
SHA_S = "c" * 64


def _project() -> Project:
    doc = {
        "info": {"name": "Foo.Bar_baz", "version": "1.0"},
        "last_serial": 42,
        "releases": {
            "0.9": [],
            "1.0": [
                {
                    "filename": "foo_bar_baz-1.0-py3-none-any.whl",
                    "url": "https://files.example/packages/aa/bb/cccc/foo_bar_baz-1.0-py3-none-any.whl",
                    "digests": {"sha256": SHA_A, "md5": "d" * 32},
                    "size": 123,
                    "packagetype": "bdist_wheel",
                    "requires_python": ">=3.8,<4",
                    "yanked": True,
                    "yanked_reason": "broken <build> & more",
                    "upload_time_iso_8601": "2023-01-02T03:04:05.123456Z",
                    "core-metadata": {"sha256": SHA_M},
                },
                {
                    "filename": "Foo.Bar_baz-1.0.tar.gz",
                    "url": "https://files.example/packages/dd/ee/ffff/Foo.Bar_baz-1.0.tar.gz",
                    "digests": {"sha256": SHA_S, "md5": "e" * 32},
                    "size": 456,
                    "packagetype": "sdist",
                    "requires_python": None,
                    "yanked": False,
                    "yanked_reason": None,
                    "upload_time_iso_8601": "2023-01-02T03:04:06Z",
                    "core-metadata": False,
                },
            ],
        },
    }
    return Project.from_json(doc)


def test_project_html_is_byte_exact():
    expected = (
        "<!DOCTYPE html>\n"
        "<html>\n"
        "  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Links for Foo.Bar_baz</title>\n"
        "  </head>\n"
        "  <body>\n"
        "    <h1>Links for Foo.Bar_baz</h1>\n"
        f'    <a href="../../packages/aa/bb/cccc/foo_bar_baz-1.0-py3-none-any.whl#sha256={SHA_A}" '
        'data-requires-python="&gt;=3.8,&lt;4" '
        f'data-core-metadata="sha256={SHA_M}" data-dist-info-metadata="sha256={SHA_M}" '
        'data-yanked="broken &lt;build&gt; &amp; more">foo_bar_baz-1.0-py3-none-any.whl</a><br/>\n'
        f'    <a href="../../packages/dd/ee/ffff/Foo.Bar_baz-1.0.tar.gz#sha256={SHA_S}">Foo.Bar_baz-1.0.tar.gz</a><br/>\n'
        "  </body>\n"
        "</html>\n"
        "<!--SERIAL 42-->"
    )
    assert pages.project_html(_project()) == expected


def test_project_html_root_uri_and_md5():
    html = pages.project_html(_project(), root_uri="https://mirror.example", digest_name="md5")
    assert f'href="https://mirror.example/packages/dd/ee/ffff/Foo.Bar_baz-1.0.tar.gz#md5={"e" * 32}"' in html


def test_yanked_without_reason_has_empty_attribute():
    project = _project()
    doc = dict(project.raw)
    doc["releases"]["1.0"][1]["yanked"] = True
    html = pages.project_html(Project.from_json(doc))
    assert 'data-yanked="">Foo.Bar_baz-1.0.tar.gz</a>' in html


def test_project_json_is_byte_exact():
    expected = {
        "meta": {"api-version": "1.1", "_last-serial": "42"},
        "name": "foo-bar-baz",
        "versions": ["0.9", "1.0"],
        "files": [
            {
                "filename": "foo_bar_baz-1.0-py3-none-any.whl",
                "url": "../../packages/aa/bb/cccc/foo_bar_baz-1.0-py3-none-any.whl",
                "hashes": {"sha256": SHA_A},
                "requires-python": ">=3.8,<4",
                "size": 123,
                "upload-time": "2023-01-02T03:04:05.123456Z",
                "yanked": "broken <build> & more",
                "core-metadata": {"sha256": SHA_M},
            },
            {
                "filename": "Foo.Bar_baz-1.0.tar.gz",
                "url": "../../packages/dd/ee/ffff/Foo.Bar_baz-1.0.tar.gz",
                "hashes": {"sha256": SHA_S},
                "size": 456,
                "upload-time": "2023-01-02T03:04:06Z",  # as the upstream gave it
                "yanked": False,
            },
        ],
    }
    text = pages.project_json(_project())
    assert text == json.dumps(expected)


def test_root_pages():
    html = pages.root_html([("a-b", "A_B", 3), ("c", "c", 9)])
    assert html == (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        "    <title>Simple Index</title>\n  </head>\n  <body>\n"
        '    <a href="a-b/">A_B</a><br/>\n'
        '    <a href="c/">c</a><br/>\n'
        "  </body>\n</html>"
    )
    assert json.loads(pages.root_json([("a-b", "A_B", 3), ("c", "c", 9)], 10)) == {
        "meta": {"api-version": "1.1", "_last-serial": 10},
        "projects": [{"name": "A_B", "_last-serial": 3}, {"name": "c", "_last-serial": 9}],
    }



def test_root_json_bytes_are_what_json_dumps_gives():
    """The root JSON page is rendered by hand for speed; its bytes must not drift from json.dumps."""
    projects = [("a-b", "A_B", 3), ("x", 'q"uote\\back', 4), ("y", "ünï-çødé", 5), ("z", "tab\tnew\nline", 6), ("s", "\U0001f40d", 7)]
    expected = json.dumps({
        "meta": {"api-version": "1.1", "_last-serial": 10},
        "projects": [{"name": n, "_last-serial": s} for _, n, s in projects],
    })
    assert pages.root_json(projects, 10) == expected
    assert pages.root_json([], 0) == json.dumps({"meta": {"api-version": "1.1", "_last-serial": 0}, "projects": []})


def test_document_keeps_only_kept_files():
    project = _project()
    project.releases["1.0"] = project.releases["1.0"][1:]
    doc = project.document()
    assert [e["filename"] for e in doc["releases"]["1.0"]] == ["Foo.Bar_baz-1.0.tar.gz"]
    assert doc["releases"]["0.9"] == []
    # the upstream's document is left as it was
    assert len(project.raw["releases"]["1.0"]) == 2


def test_root_pages_edited_in_place_are_what_rendering_them_whole_gives():
    """A small run on a large mirror edits the root pages in place (serials set, names
    inserted, renamed, removed) instead of rendering every row; the bytes must be those of a
    whole render of the records."""
    rows = [(f"p-{i:04d}", f"P_{i:04d}" if i % 3 else f"p-{i:04d}", i + 1) for i in range(1, 998)]
    page, html = pages.root_json(rows, 1000).encode(), pages.root_html(rows).encode()
    recorded = {
        "p-0001": ("p-0001", 2001),  # renamed (P_0001 before)
        "p-0500": ("P_0500", 2002),  # a new serial
        "p-0997": ("p-0997", 2003),  # the last entry
        "a-first": ("A.First", 2004),  # inserted before every entry
        "p-0331-x": ("p-0331-x", 2005),  # inserted between two
        "q-last": ("Q_Last", 2006),  # inserted after every entry
    }
    removed = {"p-0002", "p-0600", "gone-already"}
    now = {c: (d, s) for c, d, s in rows if c not in removed}
    now.update(recorded)
    whole = [(c, *now[c]) for c in sorted(now)]
    assert pages.edit_root_json(page, recorded, removed, 2006, len(rows)) == (pages.root_json(whole, 2006).encode(), True)
    assert pages.edit_root_html(html, recorded, removed) == pages.root_html(whole).encode()
    # serials only: no name changed
    serials = {"p-0500": ("P_0500", 7), "p-0003": ("p-0003", 8)}
    now = {c: serials.get(c, (d, s)) for c, d, s in rows}
    assert pages.edit_root_json(page, serials, (), 9, None) == (pages.root_json([(c, *now[c]) for c in now], 9).encode(), False)
    # from nothing, and back to nothing
    empty = pages.root_json([], 0).encode()
    one = pages.edit_root_json(empty, {"x": ("X", 3)}, (), 3, 0)
    assert one == (pages.root_json([("x", "X", 3)], 3).encode(), True)
    assert pages.edit_root_json(one[0], {}, {"x"}, 4, None) == (pages.root_json([], 4).encode(), True)
    assert pages.edit_root_html(pages.root_html([]).encode(), {"x": ("X", 3)}, ()) == pages.root_html([("x", "X", 3)]).encode()
    # what it cannot edit is rendered whole by the caller
    assert pages.edit_root_json(page, {}, (), 1000, len(rows) + 1) is None  # the records list more than the page
    assert pages.edit_root_json(page[:-1], {}, (), 1000, None) is None  # not a page this tool wrote
    assert pages.edit_root_html(html[1:], {}, ()) is None
    quoted = pages.root_json([("a", 'a"', 1), ("b", "b", 2)], 2).encode()  # a name with an escape is not read
    assert pages.edit_root_json(quoted, {"a": ("a", 5)}, (), 5, None) is None
