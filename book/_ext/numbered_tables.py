"""Sphinx extension: a glued table is numbered as a table ("Table 3"), not as a figure.

myst-nb shows a notebook's glued table with ``{glue:figure}``, which makes a figure node, so Sphinx
would number it "Fig. N" beside the page's real figures.  A ``{glue:figure}`` with
``:figclass: rs-table`` becomes a :class:`table_figure` (a figure node that Sphinx enumerates as a
``table``): its caption reads "Table N", and ``{numref}`` to its ``:name:`` gives "Table N", from any
page of the book.

A glued table of *another* page (``{glue}`` with ``:doc:``; ``{glue:figure}`` cannot reach across
pages) is numbered with the ``{rs-table}`` directive: its argument is the label, its content the
``{glue}`` directive and, as its last paragraph, the caption.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.util.docutils import SphinxDirective
from sphinx.writers.html5 import HTML5Translator

#: The figure class that marks a glued table.
TABLE_CLASS = "rs-table"


class table_figure(nodes.figure):  # noqa: N801 - docutils names node classes in lower case
    """A figure node that holds a table: numbered with the tables."""


class TablesAsTables(SphinxTransform):
    """Turn every figure of class ``rs-table`` into a :class:`table_figure`, in place (so the
    document's targets still point at it), before the standard domain collects labels and before
    figure numbers are assigned."""

    default_priority = 800  # before DoctreeReadEvent (880)

    def apply(self, **kwargs) -> None:
        for figure in list(self.document.findall(nodes.figure)):
            if TABLE_CLASS in figure["classes"] and type(figure) is nodes.figure:
                figure.__class__ = table_figure


class GluedTable(SphinxDirective):
    """A numbered table around nested content (a ``{glue}`` of another page); the content's last
    paragraph is the caption, the argument the label ``{numref}`` cites."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        node = table_figure(classes=[TABLE_CLASS])
        self.set_source_info(node)
        self.state.nested_parse(self.content, self.content_offset, node)
        last = node.children[-1] if node.children else None
        if not isinstance(last, nodes.paragraph) or len(node.children) < 2:
            raise self.error("rs-table needs the table (e.g. a {glue} directive) and then a caption paragraph")
        node.replace(last, nodes.caption(last.rawsource, "", *last.children))
        node["names"].append(nodes.fully_normalize_name(self.arguments[0]))
        self.state.document.note_explicit_target(node, node)
        return [node]


def _visit(self: HTML5Translator, node: table_figure) -> None:
    self.visit_figure(node)


def _depart(self: HTML5Translator, node: table_figure) -> None:
    self.depart_figure(node)


def setup(app):
    app.add_enumerable_node(table_figure, "table", html=(_visit, _depart),
                            latex=(lambda s, n: s.visit_figure(n), lambda s, n: s.depart_figure(n)))
    app.add_transform(TablesAsTables)
    app.add_directive("rs-table", GluedTable)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
