"""The book wing: what the notebooks share and the commands that run them.

`params`     parameter kinds and check_params;    `chapters`  every chapter's spec, declared once;
`pages`      setup/finish of a run's outputs, figures, metrics.json and the verdict;
`tables`     tables for the page;                 `analysis`  numbers several chapters compute;
`regenerate` `fsdiag regenerate`; `site` `fsdiag book --from`; `cli` their parsers; `bookfiles` where
the book's files are; `chapter_NN` (`chapter_03_04`) each chapter's tables, text, metrics and
verdict. Notebooks use `from fsdiag import book` and call `book.<name>`, and
`from fsdiag.book import chapter_NN as ch` for their own bookkeeping.
"""
from .analysis import *  # noqa: F401,F403
from .chapters import CHAPTERS, check_chapter, spec
from .pages import (book_outputs, figure_caption, figure_data, finish, provenance, resolve_out_dir, run_params, save_figure,
                    setup, show, to_jsonable, verdict, write_metrics)
from .params import Bool, Choice, Device, Int, ListOf, Methods, OutDir, Real, Seed, check_params, injected_parameters
from .tables import table
