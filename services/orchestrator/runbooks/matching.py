"""Matching a ticket to the runbooks that could fix it, with a confidence people can trust.

The API (the ticket flow and ``POST /api/v1/runbooks/match`` call it; both are wired elsewhere)::

    embedder = load_embedder()                      # once, ~1 s: run it in a thread
    matcher = Matcher(documents, embedder=embedder)  # cheap (ms): rebuild when the library changes
    result = matcher.match(
        TicketText(title=..., description=..., labels={...}, severity="high", host="web-03"),
        history={"linux-disk-full": RunStats(successes=40, runs=50, last_success_at=...)},
        now=utcnow(),
    )
    result.matches        # always the top three (fewer only if the library has fewer), best first
    result.none_likely    # True when no runbook really fits: offer them, start none
    matcher.may_auto_run(result.matches[0], "high")  # (False, "critical ...") etc.

``match`` is synchronous, pure CPU (well under a millisecond of numpy per call after the model
is loaded) and has no side effect; :func:`load_embedder` reads a 16 MB file, so async callers
run it with ``asyncio.to_thread`` once at start, not per request.

How a confidence is made (every number is in ``MatchSettings``, ``CXM_MATCH_*``):

- **semantic**: cosine similarity between the ticket's text and the runbook (title,
  description and keywords), from WordLlama's static token embeddings (``l2_supercat``, 256
  dimensions). The weights ship inside the ``wordllama`` wheel and are loaded with downloads
  disabled, so no model is ever fetched at run time. On the labelled tickets the right
  runbook's cosine has a median of 0.6 and the best wrong one's 0.33, so cosines are stretched
  linearly from ``semantic_floor`` (0.3) to ``semantic_ceiling`` (0.7) onto 0..1: an absolute
  scale, never relative to the other runbooks, or "none of these" could not be said.
- **keyword**: a scaled noisy-or of three absolute signals. BM25 (Okapi, k1=1.5, b=0.75, over title,
  description and keywords; 14-ish documents need no sparse library) saturated as
  ``1 - exp(-score / bm25_scale)``; the best runbook keyword phrase found whole in the ticket
  (single words count less than phrases); and label agreement (the ticket's ``alertname`` is
  the runbook's or named in its text, a ``mountpoint``/``service``/``job`` equals the
  runbook's label, a differing one counts against). Typos are mended before any of this: a
  ticket word that is neither a library word nor a whole word of the model's vocabulary
  ("used" is a word, "dsik" is not) is replaced by a library word at edit distance one
  (insert, delete, substitute or swap; words of four letters or more). A ``mountpoint`` or
  ``service`` label that the runbook declares is its author's routing rule: agreeing adds
  ``routing_label_bonus`` to relevance, differing takes it off (``mountpoint=/var/log``
  sends a filesystem alert to the log-partition runbook, not the generic disk one).
- **history**: the success rate with a Beta(a, a) prior centred on 0.5 (``prior_runs`` = 2a
  pseudo-runs), and exactly 0.5 below ``min_runs`` real runs, so a new runbook reads neutral,
  1 success of 1 run reads 0.5 and 40 of 50 reads 0.75.
- **recency**: 0.5 + 0.5 * 2^(-days since the last success / half-life); 0.5 (neutral) when
  there is none. A runbook that worked last week still works against today's hosts; one whose
  last success is old decays to neutral, not below it (age alone is no failure).

Text decides relevance, evidence only scales it::

    relevance  = (w_sem * semantic + w_kw * keyword) / (w_sem + w_kw)
    confidence = relevance * (1 + w_hist * (2 * history - 1) + w_rec * (2 * recency - 1))

so history and recency move a runbook by at most +-(w_hist + w_rec) of its own relevance
(+-20 % with the defaults): a popular runbook cannot win a ticket its text does not fit
(Kubernaut's worry about history), and a new one with a better text match still wins.

"None of these": the matches are always returned, and ``none_likely`` is set when the best
confidence is under ``none_below``; a confidence under the auto-run threshold never starts a
session by itself. The benchmark (``python -m bench.runbook_matching``) scores both, on a
labelled set of tickets that includes NOC noise no runbook should take.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.orchestrator.runbooks.documents import RunbookDocument
from shared.models import Severity, utcnow

log = logging.getLogger(__name__)

FACTORS: tuple[str, ...] = ("semantic", "keyword", "history", "recency")


# --- settings -----------------------------------------------------------------------------


class MatchSettings(BaseSettings):
    """Weights and thresholds of the matcher (``CXM_MATCH_*``).

    Defaults were chosen on ``bench/data/runbook_tickets.jsonl`` (see the benchmark's
    ablation; the same set they are measured on, so expect a few points less on fresh
    tickets): semantic and keyword carry equal weight because each rescues the other's
    failures (keywords miss paraphrases and non-native phrasing, embeddings miss exact error
    strings and alert names, and alone they cannot say "none": none precision 0.69);
    history and recency only scale that. Auto-run thresholds sit where every match above
    them on the set was right (critical has no threshold: a person always confirms).
    """

    model_config = SettingsConfigDict(env_prefix="CXM_MATCH_", extra="ignore")

    weight_semantic: float = Field(default=0.5, ge=0)
    weight_keyword: float = Field(default=0.5, ge=0)
    weight_history: float = Field(
        default=0.15, ge=0, le=0.5, description="at most +-15% of relevance from success rate"
    )
    weight_recency: float = Field(
        default=0.05, ge=0, le=0.5, description="at most +-5% of relevance from a recent success"
    )

    semantic_floor: float = Field(default=0.3, description="cosine read as 0 (noise level)")
    semantic_ceiling: float = Field(default=0.7, description="cosine read as 1 (a clear match)")
    bm25_scale: float = Field(default=12.0, gt=0, description="BM25 score read as 1 - 1/e")

    routing_label_bonus: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        description="added to relevance per agreeing mountpoint/service label the runbook "
        "declares (taken off per differing one): the author's routing rule",
    )

    prior_runs: float = Field(default=10.0, gt=0, description="pseudo-runs of the Beta prior")
    min_runs: int = Field(default=3, ge=0, description="fewer real runs read as neutral")
    recency_half_life_days: float = Field(default=30.0, gt=0)

    none_below: float = Field(
        default=0.4, ge=0, le=1, description="best confidence under this: no runbook fits"
    )
    auto_run_high: float = Field(default=0.85, ge=0, le=1.01)
    auto_run_medium: float = Field(default=0.75, ge=0, le=1.01)
    auto_run_low: float = Field(default=0.7, ge=0, le=1.01)
    auto_run_info: float = Field(default=0.7, ge=0, le=1.01)


# --- inputs and outputs -------------------------------------------------------------------


class TicketText(BaseModel):
    """What the matcher reads of a ticket."""

    title: str
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    severity: Severity = "medium"
    host: str | None = None


class RunStats(BaseModel):
    """A runbook's past sessions, as the session store counts them."""

    successes: int = Field(ge=0)
    runs: int = Field(ge=0)
    last_success_at: datetime | None = None


class MatchFactors(BaseModel):
    """Each factor on 0..1; 0.5 is neutral for history and recency (no evidence)."""

    semantic: float
    keyword: float
    history: float
    recency: float


class Match(BaseModel):
    runbook_id: str
    title: str
    confidence: float
    factors: MatchFactors
    explanation: str


class MatchResult(BaseModel):
    """The top matches, best first, and whether none of them is likely to fit."""

    matches: list[Match]
    none_likely: bool
    none_reason: str | None = None


# --- the embedding model ------------------------------------------------------------------


class Embedder(Protocol):
    """Texts to unit-length vectors, one row each."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def known_words(self) -> frozenset[str]:
        """Whole words the model's vocabulary holds: real words, never mended as typos."""
        ...


class EmbedderUnavailable(RuntimeError):
    """The embedding weights are not on this machine (and are never downloaded)."""


@dataclass
class WordLlamaEmbedder:
    """WordLlama ``l2_supercat`` (256 dimensions) from the weights inside its wheel."""

    model: object
    name: str = "wordllama l2_supercat 256d (weights from the wheel)"
    load_seconds: float = 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors: np.ndarray = self.model.embed(texts, norm=True)  # type: ignore[attr-defined]
        return np.nan_to_num(vectors)

    def known_words(self) -> frozenset[str]:
        # SentencePiece marks a word start with U+2581; a whole word in the vocabulary is a
        # real word ("used"), where "dsik" is not.
        vocab = self.model.tokenizer.get_vocab()  # type: ignore[attr-defined]
        return frozenset(t[1:].lower() for t in vocab if t.startswith("\u2581") and t[1:].isalpha())


def load_embedder() -> WordLlamaEmbedder:
    """Load WordLlama with downloads disabled: blocking (~1 s), call once, in a thread.

    The wheel ships ``weights/`` and ``tokenizers/`` beside its code, but its own lookup of the
    "project root" tokenizer path has a typo (``tokenizer/``), so the package folder is passed
    as the cache folder, where the layout matches. Importing ``wordllama.inference`` calls
    ``logging.basicConfig``; that handler is removed again so the service's logging stays its
    own.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    started = time.perf_counter()
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError as exc:  # the dependency itself is missing: say which
        raise EmbedderUnavailable(f"wordllama is not installed: {exc}") from exc
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    package = Path(wordllama.__file__).resolve().parent
    try:
        model = WordLlama.load(cache_dir=package, disable_download=True)
    except FileNotFoundError as exc:
        raise EmbedderUnavailable(str(exc)) from exc
    embedder = WordLlamaEmbedder(model=model, load_seconds=time.perf_counter() - started)
    log.info("runbook matcher embedder loaded in %.2f s", embedder.load_seconds)
    return embedder


# --- text ---------------------------------------------------------------------------------

_STOP_WORDS = """
    a an and are as at be been but by can could do does for from has have hi hello how i if
    in into is it its me my no not of on or our out please pls so than that the their them
    then there these this to up us was we were what when where which while who will with
    would you your team thanks thank regards dear kindly urgent asap help issue problem
    ticket alert firing triggered recovered host server node since again still also any some
    all just get got one two see seems look looks getting very
"""
_STOP = frozenset(_STOP_WORDS.split())
# Labels whose values say what is wrong (not which machine it is on): they join the text.
_TEXT_LABEL_KEYS = """
    alertname job service unit mountpoint device fstype category component check monitor
    reason container_name exporter
"""
_TEXT_LABELS = frozenset(_TEXT_LABEL_KEYS.split())
_ROUTING_LABELS = frozenset({"mountpoint", "service"})
_LABEL_WEIGHT = {"alertname": 1.0, "mountpoint": 1.0, "service": 0.6, "job": 0.4}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# Host names, addresses and pod names (web-03, 192.0.2.1:9100, checkout-7d9f8c-x2x4z) say
# where, not what: in a runbook's examples or a ticket they only add false overlap.
_HOSTISH = re.compile(r"(?=[^/]*\d)[A-Za-z0-9_]+(?:[-.:][A-Za-z0-9_]+)+")


def _stem(word: str) -> str:
    """A deliberately crude suffix stripper, applied to tickets and runbooks alike, so
    restarting/restarted/restarts and crash/crashes/crashing meet."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


def _words(text: str) -> list[str]:
    """Lower-case words; CamelCase alert names also give their parts (and stay whole)."""
    out: list[str] = []
    for raw in re.findall(r"[A-Za-z0-9][A-Za-z0-9_./:-]*", text):
        if _HOSTISH.fullmatch(raw.rstrip(".:")):
            continue
        parts = _CAMEL.sub(" ", raw).lower()
        lowered = raw.lower().strip("./-_")
        pieces = re.findall(r"[a-z0-9]+", parts)
        if len(pieces) > 1 and lowered.isalnum():
            out.append(lowered)
        out.extend(pieces)
    return out


def tokens(text: str) -> list[str]:
    """Stemmed content words of ``text``."""
    return [_stem(w) for w in _words(text) if w not in _STOP and not w.isdigit()]


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent swaps)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


@dataclass(frozen=True)
class _Phrase:
    text: str
    tokens: frozenset[str]


@dataclass(frozen=True)
class _Doc:
    document: RunbookDocument
    terms: Counter[str]
    length: int
    phrases: tuple[_Phrase, ...]
    mentions: frozenset[str]  # lower-cased whole words of the text (alert names it names)


# --- the matcher --------------------------------------------------------------------------


class Matcher:
    """Ranks a library's runbooks for a ticket; immutable once built (build a new one for a
    new library, it takes milliseconds and can share the embedder)."""

    def __init__(
        self,
        documents: Sequence[RunbookDocument],
        *,
        embedder: Embedder | None,
        settings: MatchSettings | None = None,
    ) -> None:
        """``embedder=None`` turns the semantic factor off (its weight then counts for
        nothing): for a machine where the model cannot load, said in every explanation."""
        self.settings = settings or MatchSettings()
        self.embedder = embedder
        self._docs = tuple(self._index(d) for d in documents)
        self._known = embedder.known_words() if embedder is not None else frozenset()
        self._vocab: Counter[str] = Counter()
        for doc in self._docs:
            self._vocab.update(set(doc.terms))
        self._delete_index: dict[str, list[str]] = {}
        for word in self._vocab:
            if len(word) >= 4:
                for variant in _deletes(word) | {word}:
                    self._delete_index.setdefault(variant, []).append(word)
        n = len(self._docs)
        self._idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in self._vocab.items()}
        self._avg_len = sum(d.length for d in self._docs) / n if n else 1.0
        self._doc_vectors: np.ndarray | None = None
        if embedder is not None and self._docs:
            self._doc_vectors = embedder.embed([self._doc_text(d.document) for d in self._docs])

    def with_documents(self, documents: Sequence[RunbookDocument]) -> Matcher:
        """A matcher for a changed library, keeping this one's model and settings."""
        return Matcher(documents, embedder=self.embedder, settings=self.settings)

    # -- indexing --

    @staticmethod
    def _doc_text(document: RunbookDocument) -> str:
        return ". ".join([document.title, document.description, ", ".join(document.keywords)])

    @staticmethod
    def _index(document: RunbookDocument) -> _Doc:
        # Title and keywords are what the author chose to be matched on: counted twice.
        terms = Counter(tokens(Matcher._doc_text(document)))
        terms.update(tokens(document.title + " " + " ".join(document.keywords)))
        terms.update(tokens(" ".join(document.labels.values())))
        phrases = tuple(_Phrase(k, frozenset(tokens(k))) for k in document.keywords if tokens(k))
        mentions = frozenset(
            w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9_]+", Matcher._doc_text(document))
        ) | frozenset(v.lower() for v in document.labels.values())
        return _Doc(document, terms, sum(terms.values()), phrases, mentions)

    # -- ticket text --

    def _mend(self, word: str) -> str:
        """A library word at edit distance one from an unknown ticket word, else the word."""
        if word in self._vocab or word in self._known or len(word) < 4 or not word.isalpha():
            return word
        candidates: set[str] = set()
        for variant in _deletes(word) | {word}:
            candidates.update(self._delete_index.get(variant, ()))
        best = sorted(
            (c for c in candidates if _osa_distance(word, c) <= 1),
            key=lambda c: (-self._vocab[c], c),
        )
        return best[0] if best else word

    def _ticket_tokens(self, ticket: TicketText) -> tuple[list[str], dict[str, str]]:
        text = self._ticket_text(ticket)
        mended: dict[str, str] = {}
        out: list[str] = []
        for word in tokens(text):
            fixed = self._mend(word)
            if fixed != word:
                mended[word] = fixed
            out.append(fixed)
        return out, mended

    @staticmethod
    def _ticket_text(ticket: TicketText) -> str:
        labels = " ".join(v for k, v in ticket.labels.items() if k.lower() in _TEXT_LABELS)
        return " ".join(p for p in (ticket.title, ticket.description, labels) if p)

    # -- factors --

    def _bm25(self, query: set[str], doc: _Doc) -> float:
        k1, b = 1.5, 0.75
        score = 0.0
        for term in query:
            tf = doc.terms.get(term, 0)
            if tf:
                norm = tf * (k1 + 1) / (tf + k1 * (1 - b + b * doc.length / self._avg_len))
                score += self._idf[term] * norm
        return score

    @staticmethod
    def _phrase(query: set[str], doc: _Doc) -> tuple[float, str | None]:
        best, which = 0.0, None
        for phrase in doc.phrases:
            found = len(phrase.tokens & query) / len(phrase.tokens)
            if found == 1.0:
                score = 1.0 if len(phrase.tokens) > 1 else 0.6
            elif len(phrase.tokens) >= 3 and found >= 2 / 3:
                score = 0.5
            else:
                continue
            if score > best:
                best, which = score, phrase.text
        return best, which

    @staticmethod
    def _labels(ticket: TicketText, doc: _Doc) -> tuple[float, float, list[str]]:
        """Agreement of the ticket's labels with the runbook's: +weight per agreeing key,
        -weight per differing key (alertname never counts against: one runbook serves
        several alerts and names the others in its text); 2.0 reads as full agreement.

        Also the routing score: +1 per agreeing, -1 per differing "specific" label
        (``mountpoint``, ``service``), a rule the author wrote (``mountpoint: /var/log``)
        that text similarity alone would miss."""
        labels = {k.lower(): v.strip().lower() for k, v in ticket.labels.items() if v}
        score, routing, why = 0.0, 0.0, []
        alert = labels.get("alertname")
        if alert and alert in doc.mentions:
            score += _LABEL_WEIGHT["alertname"]
            why.append(f"alertname {ticket.labels.get('alertname', alert)}")
        for key, value in doc.document.labels.items():
            key = key.lower()
            if key == "alertname" or key not in labels:
                continue
            weight = _LABEL_WEIGHT.get(key, 0.2)
            specific = 1.0 if key in _ROUTING_LABELS else 0.0
            if labels[key] == value.lower():
                score += weight
                routing += specific
                why.append(f"{key}={value}")
            else:
                score -= weight
                routing -= specific
        for name in ("service", "job"):
            named = labels.get(name)
            if named and name not in doc.document.labels and named in doc.mentions:
                score += 0.3
                why.append(f"{name} {named}")
        return max(0.0, min(1.0, score / 2.0)), routing, why

    def _history(self, stats: RunStats | None) -> float:
        if stats is None or stats.runs < self.settings.min_runs:
            return 0.5
        a = self.settings.prior_runs / 2
        successes = min(stats.successes, stats.runs)
        return (successes + a) / (stats.runs + 2 * a)

    def _recency(self, stats: RunStats | None, now: datetime) -> tuple[float, float | None]:
        if stats is None or stats.last_success_at is None:
            return 0.5, None
        days = max(0.0, (now - stats.last_success_at).total_seconds() / 86400)
        return 0.5 + 0.5 * 2 ** (-days / self.settings.recency_half_life_days), days

    # -- the ranking --

    def match(
        self,
        ticket: TicketText,
        *,
        history: Mapping[str, RunStats] | None = None,
        now: datetime | None = None,
        limit: int = 3,
    ) -> MatchResult:
        """The ``limit`` best runbooks for ``ticket`` (always that many while the library has
        them), best first, and whether none is likely to fit. No side effect."""
        s = self.settings
        now = now or utcnow()
        history = history or {}
        if not self._docs:
            return MatchResult(matches=[], none_likely=True, none_reason="the library is empty")
        words, mended = self._ticket_tokens(ticket)
        query = set(words)
        if self.embedder is not None and self._doc_vectors is not None and query:
            # The model has never seen "dsik": give it the mended words too.
            text = " ".join([self._ticket_text(ticket), *sorted(set(mended.values()))])
            vector = self.embedder.embed([text])[0]
            cosines = self._doc_vectors @ vector
        else:
            cosines = np.zeros(len(self._docs))
        span = max(s.semantic_ceiling - s.semantic_floor, 1e-9)
        w_text = s.weight_semantic + s.weight_keyword
        scored: list[tuple[float, float, Match]] = []
        for i, doc in enumerate(self._docs):
            semantic = float(np.clip((cosines[i] - s.semantic_floor) / span, 0.0, 1.0))
            bm25 = 1 - math.exp(-self._bm25(query, doc) / s.bm25_scale)
            phrase, phrase_text = self._phrase(query, doc)
            label, routing, label_why = self._labels(ticket, doc)
            # Scaled noisy-or: any one signal can make a strong case, but it takes two or
            # three agreeing to near 1, which keeps a distinguishing label (mountpoint) able
            # to separate two runbooks that both match the text.
            keyword = 1 - (1 - 0.6 * bm25) * (1 - 0.7 * phrase) * (1 - 0.9 * label)
            stats = history.get(doc.document.id)
            hist = self._history(stats)
            recency, days = self._recency(stats, now)
            relevance = (
                (s.weight_semantic * semantic + s.weight_keyword * keyword) / w_text
                if w_text > 0
                else 0.0
            )
            if w_text > 0 and s.weight_keyword > 0:
                relevance = min(1.0, max(0.0, relevance + s.routing_label_bonus * routing))
            lift = s.weight_history * (2 * hist - 1) + s.weight_recency * (2 * recency - 1)
            confidence = float(np.clip(relevance * (1 + lift), 0.0, 1.0))
            factors = MatchFactors(
                semantic=round(semantic, 4),
                keyword=round(keyword, 4),
                history=round(hist, 4),
                recency=round(recency, 4),
            )
            contributions = {
                "semantic": s.weight_semantic * semantic / w_text if w_text else 0.0,
                "keyword": s.weight_keyword * keyword / w_text if w_text else 0.0,
                "history": relevance * s.weight_history * (2 * hist - 1),
                "recency": relevance * s.weight_recency * (2 * recency - 1),
            }
            details = {
                "semantic": "text similarity" if self.embedder else "off (no embedding model)",
                "keyword": self._keyword_detail(bm25, phrase_text, label_why, mended),
                "history": self._history_detail(stats),
                "recency": "no success on record"
                if days is None
                else f"last success {self._age(days)} ago",
            }
            explanation = self._explain(factors, contributions, details, confidence)
            match = Match(
                runbook_id=doc.document.id,
                title=doc.document.title,
                confidence=round(confidence, 4),
                factors=factors,
                explanation=explanation,
            )
            scored.append((confidence, relevance, match))
        scored.sort(key=lambda x: (-x[0], -x[1], x[2].runbook_id))
        matches = [m for _, _, m in scored[: max(limit, 0)]]
        best = scored[0][0]
        none_likely = best < s.none_below
        reason = (
            f"best confidence {best:.2f} is under {s.none_below:.2f}: no runbook clearly fits"
            if none_likely
            else None
        )
        return MatchResult(matches=matches, none_likely=none_likely, none_reason=reason)

    # -- explanations --

    @staticmethod
    def _age(days: float) -> str:
        if days < 1:
            return f"{days * 24:.0f} h"
        return f"{days:.0f} d"

    @staticmethod
    def _keyword_detail(
        bm25: float, phrase: str | None, labels: list[str], mended: Mapping[str, str]
    ) -> str:
        parts = []
        if phrase:
            parts.append(f"phrase '{phrase}'")
        if labels:
            parts.append("labels " + ", ".join(labels))
        parts.append(f"BM25 {bm25:.2f}")
        if mended:
            fixes = ", ".join(f"{a}->{b}" for a, b in sorted(mended.items())[:3])
            parts.append(f"typos read as {fixes}")
        return "; ".join(parts)

    def _history_detail(self, stats: RunStats | None) -> str:
        if stats is None or stats.runs == 0:
            return "no runs yet (neutral)"
        if stats.runs < self.settings.min_runs:
            return f"{stats.successes}/{stats.runs} runs, too few to count (neutral)"
        return f"{stats.successes}/{stats.runs} runs succeeded (smoothed)"

    @staticmethod
    def _explain(
        factors: MatchFactors,
        contributions: Mapping[str, float],
        details: Mapping[str, str],
        confidence: float,
    ) -> str:
        """One line, strongest factor first: the factor that added most to the confidence."""
        order = sorted(FACTORS, key=lambda f: -contributions[f])
        values = factors.model_dump()
        head, *rest = order
        text = f"{confidence:.2f}: strongest {head} {values[head]:.2f} ({details[head]})"
        tail = ", ".join(f"{f} {values[f]:.2f} ({details[f]})" for f in rest)
        return f"{text}; {tail}"

    # -- auto-run policy --

    def auto_run_threshold(self, severity: Severity) -> float | None:
        """The confidence a match needs to start by itself; ``None`` for critical: never."""
        return auto_run_threshold(severity, self.settings)

    def may_auto_run(self, match: Match, severity: Severity) -> tuple[bool, str]:
        return may_auto_run(match, severity, settings=self.settings)

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def runbook_ids(self) -> list[str]:
        return [d.document.id for d in self._docs]


def auto_run_threshold(severity: Severity, settings: MatchSettings | None = None) -> float | None:
    """Per-severity threshold from settings; critical has none because a person confirms it
    (seed 000's decision), whatever any setting says."""
    s = settings or MatchSettings()
    thresholds: dict[str, float | None] = {
        "critical": None,
        "high": s.auto_run_high,
        "medium": s.auto_run_medium,
        "low": s.auto_run_low,
        "info": s.auto_run_info,
    }
    return thresholds[severity]


def may_auto_run(
    match: Match, severity: Severity, *, settings: MatchSettings | None = None
) -> tuple[bool, str]:
    """Whether ``match`` may start a session without a person, and why (or why not)."""
    threshold = auto_run_threshold(severity, settings)
    if threshold is None:
        return False, f"{severity} incidents need a person to confirm {match.runbook_id}"
    if match.confidence < threshold:
        return (
            False,
            f"confidence {match.confidence:.2f} is under the {severity} threshold "
            f"{threshold:.2f}: offer it, do not start it",
        )
    return True, f"confidence {match.confidence:.2f} >= {severity} threshold {threshold:.2f}"


def load_library_matcher(
    documents: Iterable[RunbookDocument],
    *,
    embedder: Embedder | None = None,
    settings: MatchSettings | None = None,
) -> Matcher:
    """Convenience for scripts: a matcher over ``documents``, loading the model when none is
    given (blocking: not for an event loop)."""
    return Matcher(list(documents), embedder=embedder or load_embedder(), settings=settings)
