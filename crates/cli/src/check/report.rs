//! Verdicts and their output: one line per rule, then a summary (text or JSON).

use crate::stdout::outln;
use serde_json::{json, Value};

/// The outcome of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target did what the spec requires.
    Pass,
    /// The target did not; the detail says what was seen.
    Fail,
    /// The rule could not run; the detail says why.
    Skip,
    /// Something the spec leaves optional, reported for information.
    Info,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
            Self::Info => "INFO",
        }
    }
}

/// One rule's result.
#[derive(Debug, Clone)]
pub struct Line {
    /// Stable rule identifier (`tcp.icresp.pfv`, ...).
    pub id: &'static str,
    /// The outcome.
    pub verdict: Verdict,
    /// The spec section the rule follows.
    pub section: &'static str,
    /// What was seen (for PASS/INFO), what was wrong (FAIL) or why it did not run (SKIP).
    pub detail: String,
}

/// All results, printed as they come in normal mode so a hang shows where.
pub struct Report {
    /// The lines so far.
    pub lines: Vec<Line>,
    json: bool,
}

impl Report {
    /// An empty report; `json` defers all output to [`Report::finish`].
    pub fn new(json: bool) -> Self {
        Self {
            lines: Vec::new(),
            json,
        }
    }

    /// Records (and in normal mode prints) one line.
    pub fn add(
        &mut self,
        id: &'static str,
        verdict: Verdict,
        section: &'static str,
        detail: String,
    ) {
        let l = Line {
            id,
            verdict,
            section,
            detail,
        };
        if !self.json {
            outln!("{}", text_line(&l));
        }
        self.lines.push(l);
    }

    /// Number of lines with verdict `v`.
    pub fn count(&self, v: Verdict) -> usize {
        self.lines.iter().filter(|l| l.verdict == v).count()
    }

    /// Prints the summary (or the whole JSON document); true if no rule failed.
    pub fn finish(&self, target: &str) -> bool {
        let (p, f, s, i) = (
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip),
            self.count(Verdict::Info),
        );
        if self.json {
            outln!("{:#}", self.to_json(target));
        } else {
            outln!("summary: {p} passed, {f} failed, {s} skipped, {i} info ({target})");
        }
        f == 0
    }

    /// The JSON document: every rule and the counts.
    pub fn to_json(&self, target: &str) -> Value {
        json!({
            "target": target,
            "rules": self.lines.iter().map(|l| json!({
                "id": l.id,
                "verdict": l.verdict.word(),
                "section": l.section,
                "detail": l.detail,
            })).collect::<Vec<_>>(),
            "passed": self.count(Verdict::Pass),
            "failed": self.count(Verdict::Fail),
            "skipped": self.count(Verdict::Skip),
            "info": self.count(Verdict::Info),
        })
    }
}

/// `PASS  id  [section]  detail`.
pub fn text_line(l: &Line) -> String {
    format!(
        "{:<4}  {:<32} [{}]  {}",
        l.verdict.word(),
        l.id,
        l.section,
        l.detail
    )
}
