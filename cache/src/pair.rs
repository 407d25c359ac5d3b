//! The pair check: after the similarity search, decides whether a candidate's problem asks what
//! the request's asks, from how the two texts differ rather than from lists of words.
//!
//! The two problems are split into words and aligned (longest common subsequence). What is
//! left over forms edit blocks. One letter-level slip (two letters swapped, one dropped or
//! added, inside a lower-case word of five letters or more) is a typo and counts as equal; case,
//! spacing and punctuation never produce words, while operators and other symbols are words of
//! their own. Then:
//! - no edit left, or one word order rotated around a clause (`X, Y` / `Y, X`): the same
//!   problem written again — served whatever its cosine (a typo moves MiniLM's vector far);
//! - otherwise a logistic score of the cosine and the shape of the edits decides. Its
//!   coefficients are learned (`benches/safety/train_pair_check.py`) on the development part of
//!   the labelled pairs of `benches/safety/make_eval.py`, never on its held-out part. What it
//!   learned is general: one small pointed edit (a word inserted, replaced or moved: `not`, an
//!   opposite, a name, a detail) changes the answer far more often than a rewording that
//!   touches many words, and the closer the embeddings the safer.
//!
//! Numbers and units are compared exactly before this, by the guard ([`crate::guard`]).

/// Words per problem the alignment looks at (it costs `MAX_WORDS²` steps at most). Beyond them
/// two problems must have the same words in the same order, or the candidate is never served: a
/// long prompt that differs only in its last paragraph is a different problem.
const MAX_WORDS: usize = 256;

/// Coefficients of the learned score over [`Shape::vector`] (standardisation folded in).
/// Produced by `benches/safety/train_pair_check.py` from the development part only, for the
/// default embedding model ([`crate::embed::DEFAULT_MODEL`]): another model needs its own.
const WEIGHTS: [f32; FEATURES] = [
    5.546, 5.1545, -2.7697, 3.6278, 1.3716, -2.2327, -0.61368, 4.9073,
];
/// Intercept of the learned score.
const BIAS: f32 = -9.0369;
/// The score a candidate needs (chosen on the development part for at most 1.5 % wrong hits).
pub const MIN_SCORE: f32 = 0.44;
/// Number of features in [`Shape::vector`].
pub const FEATURES: usize = 8;

/// How two problems differ.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shape {
    /// Edited words (not typos) of four letters or more, or capitalised.
    pub content_edits: usize,
    /// Edited lower-case words of up to three letters.
    pub short_edits: usize,
    /// Edited words holding a digit.
    pub number_edits: usize,
    /// Word pairs that differ by a typo.
    pub typos: usize,
    /// Edit blocks (runs of words between two aligned words that are not typos).
    pub blocks: usize,
    /// The same words in another order (not a rotation).
    pub reordered: bool,
    /// The same words rotated around a clause boundary.
    pub rotated: bool,
    /// Every edit is a clause or sentence of its own before or after the shared text
    /// (`Question: …`, `… Show your work.`).
    pub wrapped: bool,
    /// Words in the shorter problem (up to `MAX_WORDS`).
    pub shorter: usize,
    /// The problems differ beyond the first `MAX_WORDS` words (never served).
    pub tail_differs: bool,
}

impl Shape {
    /// Edits that are not typos.
    pub fn edits(&self) -> usize {
        self.content_edits + self.short_edits + self.number_edits
    }

    /// The same problem written again: no word differs but by typos, or a clause rotated.
    pub fn surface_only(&self) -> bool {
        !self.tail_differs && self.shorter > 0 && (self.edits() == 0 || self.rotated)
    }

    /// The learned score's inputs, in [`WEIGHTS`] order.
    pub fn vector(&self, cosine: f32) -> [f32; FEATURES] {
        let n = self.shorter.max(1) as f32;
        [
            cosine,
            self.content_edits as f32 / n,
            self.short_edits as f32 / n,
            f32::from(u8::from(self.typos > 0)),
            self.blocks.min(8) as f32,
            f32::from(u8::from(self.reordered)),
            f32::from(u8::from(self.blocks == 1 && self.edits() <= 2)),
            f32::from(u8::from(self.wrapped)),
        ]
    }

    /// The learned score in 0..1 (higher: more likely the same problem).
    pub fn score(&self, cosine: f32) -> f32 {
        let z = BIAS
            + self
                .vector(cosine)
                .iter()
                .zip(WEIGHTS)
                .map(|(x, w)| x * w)
                .sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// What the pair check says of a candidate above the number and unit checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The same words but for typos, case, spacing, punctuation or a rotated clause.
    Surface,
    /// The learned score passed.
    Same {
        /// The score.
        score: f32,
    },
    /// The learned score did not pass.
    Different {
        /// The score.
        score: f32,
    },
}

/// Judges a candidate at `cosine` whose problem is `cached` for the request's `query` (its
/// [`words`], split once per lookup however many candidates it meets).
/// `threshold` is the route's similarity threshold: below it only a surface repeat is served.
pub fn judge(query: &Words, cached: &str, cosine: f32, threshold: f32) -> Option<Verdict> {
    let s = compare(query, &words(cached));
    if s.surface_only() {
        return Some(Verdict::Surface);
    }
    if cosine < threshold {
        return None;
    }
    let score = if s.tail_differs { 0.0 } else { s.score(cosine) };
    Some(if score >= MIN_SCORE {
        Verdict::Same { score }
    } else {
        Verdict::Different { score }
    })
}

/// A problem split into [`Word`]s (see [`words`]).
#[derive(Debug, Clone)]
pub struct Words {
    /// The first `MAX_WORDS` words.
    head: Vec<Word>,
    /// SHA-256 of the words after them (lower-cased, each ended by a NUL): only their equality
    /// matters, and keeping a digest bounds the memory of a huge prompt to `MAX_WORDS` words.
    tail: [u8; 32],
}

impl Words {
    /// Adds a word: to the head while it has room, else to the tail's digest.
    fn push(&mut self, word: Word, tail: &mut sha2::Sha256) {
        use sha2::Digest;
        if self.head.len() < MAX_WORDS {
            self.head.push(word);
        } else {
            tail.update(word.lower.as_bytes());
            tail.update([0]);
        }
    }
}

/// A word, whether it was written with a capital, and whether a clause or sentence mark
/// (`: ; , . ? !`) stands between it and the word before.
#[derive(Debug, Clone)]
struct Word {
    lower: String,
    capital: bool,
    detached: bool,
}

/// Whether `c` carries meaning on its own: anything but letters, digits, spacing, quotes,
/// brackets and the marks that end or separate clauses.
fn is_symbol(c: char) -> bool {
    !(c.is_alphanumeric()
        || c.is_whitespace()
        || matches!(
            c,
            '.' | ','
                | ';'
                | ':'
                | '?'
                | '!'
                | '\''
                | '"'
                | '’'
                | '‘'
                | '“'
                | '”'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '`'
                | '_'
        ))
}

/// Words: runs of letters and digits (an apostrophe inside a word kept), lower-cased, and
/// symbols one by one.
pub fn words(text: &str) -> Words {
    use sha2::Digest;
    let mut out = Words {
        head: Vec::new(),
        tail: [0; 32],
    };
    let mut tail = sha2::Sha256::new();
    let mut cur = String::new();
    let (mut capital, mut detached, mut mark) = (false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let inner_apostrophe = matches!(c, '\'' | '’')
            && !cur.is_empty()
            && chars.peek().is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() || inner_apostrophe {
            if cur.is_empty() {
                capital = c.is_uppercase();
                detached = mark;
                mark = false;
            }
            cur.extend(c.to_lowercase());
        } else {
            if !cur.is_empty() {
                let word = Word {
                    lower: std::mem::take(&mut cur),
                    capital,
                    detached,
                };
                out.push(word, &mut tail);
            }
            if is_symbol(c) {
                // Operators and other symbols change a problem as much as words do
                // (`5 - 3` / `5 + 3`, `x > y` / `x < y`): each is a word of its own.
                let word = Word {
                    lower: c.to_string(),
                    capital: false,
                    detached: mark,
                };
                out.push(word, &mut tail);
                mark = false;
            }
            mark |= matches!(c, ':' | ';' | ',' | '.' | '?' | '!' | '\n');
        }
    }
    if !cur.is_empty() {
        let word = Word {
            lower: cur,
            capital,
            detached,
        };
        out.push(word, &mut tail);
    }
    out.tail = tail.finalize().into();
    out
}

/// Whether two different words differ by one slip: two neighbouring letters swapped, or one
/// letter dropped or added — inside the word (not its first or last letter: `root`/`roots`,
/// `angle`/`angel` are other words), in lower-case words of five letters or more (names such as
/// `Carol`/`Carl` never count). A slip can still turn one real word into another
/// (`causal`/`casual`); [`shape`] accepts at most one per problem.
fn typo(a: &Word, b: &Word) -> bool {
    if a.capital || b.capital {
        return false;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.lower.chars().collect(), b.lower.chars().collect());
    if a.len().min(b.len()) < 5 || !a.iter().chain(&b).all(|c| c.is_alphabetic()) {
        return false;
    }
    if a.len() == b.len() {
        let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        return diff.len() == 2
            && diff[0] > 0
            && diff[1] + 1 < a.len()
            && diff[1] == diff[0] + 1
            && a[diff[0]] == b[diff[1]]
            && a[diff[1]] == b[diff[0]];
    }
    let (short, long) = if a.len() < b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if long.len() != short.len() + 1 {
        return false;
    }
    (1..long.len() - 1).any(|skip| {
        long.iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, c)| c)
            .eq(short.iter())
    })
}

/// How `a` and `b` differ (see the module docs).
pub fn shape(a: &str, b: &str) -> Shape {
    compare(&words(a), &words(b))
}

/// How two split problems differ.
fn compare(a: &Words, b: &Words) -> Shape {
    let (wa, wb) = (&a.head[..], &b.head[..]);
    let mut s = Shape {
        shorter: wa.len().min(wb.len()),
        tail_differs: a.tail != b.tail,
        ..Shape::default()
    };
    if wa.len() == wb.len() && wa.iter().zip(wb).any(|(x, y)| x.lower != y.lower) {
        let mut sa: Vec<&str> = wa.iter().map(|w| w.lower.as_str()).collect();
        let mut sb: Vec<&str> = wb.iter().map(|w| w.lower.as_str()).collect();
        // A rotation at a clause boundary of both texts: `X, Y` / `Y, X`.
        s.rotated = (1..sa.len()).any(|k| {
            wa[k].detached
                && wb.get(sa.len() - k).is_some_and(|w| w.detached)
                && sa[k..].iter().chain(&sa[..k]).eq(sb.iter())
        });
        sa.sort_unstable();
        sb.sort_unstable();
        s.reordered = !s.rotated && sa == sb;
    }
    let blocks = edit_blocks(wa, wb);
    s.wrapped = !blocks.is_empty() && blocks.iter().all(|k| detached(k, wa, wb));
    for block in &blocks {
        let (del, ins) = (&wa[block.a.0..block.a.1], &wb[block.b.0..block.b.1]);
        if s.typos == 0 && del.len() == 1 && ins.len() == 1 && typo(&del[0], &ins[0]) {
            s.typos = 1;
            continue;
        }
        s.blocks += 1;
        for w in del.iter().chain(ins) {
            if w.lower.chars().any(|c| c.is_ascii_digit()) {
                s.number_edits += 1;
            } else if w.capital || w.lower.chars().count() >= 4 {
                s.content_edits += 1;
            } else {
                s.short_edits += 1;
            }
        }
    }
    s
}

/// A run of unaligned words: `a[a.0..a.1]` deleted, `b[b.0..b.1]` inserted.
struct Block {
    a: (usize, usize),
    b: (usize, usize),
}

/// The runs of unaligned words between aligned words (longest common subsequence).
fn edit_blocks(a: &[Word], b: &[Word]) -> Vec<Block> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u16; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i].lower == b[j].lower {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let mut blocks = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut bi, mut bj) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i].lower == b[j].lower {
            if (bi, bj) != (i, j) {
                blocks.push(Block {
                    a: (bi, i),
                    b: (bj, j),
                });
            }
            i += 1;
            j += 1;
            (bi, bj) = (i, j);
        } else if j == m || (i < n && lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            i += 1;
        } else {
            j += 1;
        }
    }
    if (bi, bj) != (n, m) {
        blocks.push(Block {
            a: (bi, n),
            b: (bj, m),
        });
    }
    blocks
}

/// Whether `block` is a clause of its own at the start or the end of both texts: nothing
/// precedes it and a mark separates it from what follows, or nothing follows it and a mark
/// separates it from what precedes.
fn detached(block: &Block, a: &[Word], b: &[Word]) -> bool {
    let first_after = |w: &[Word], end: usize| w.get(end).is_some_and(|x| x.detached);
    let at_start = block.a.0 == 0 && block.b.0 == 0;
    let at_end = block.a.1 == a.len() && block.b.1 == b.len();
    let (deleted, inserted) = (&a[block.a.0..block.a.1], &b[block.b.0..block.b.1]);
    if at_start && !at_end {
        return (deleted.is_empty() || first_after(a, block.a.1))
            && (inserted.is_empty() || first_after(b, block.b.1));
    }
    if at_end && !at_start {
        return deleted.first().is_none_or(|w| w.detached)
            && inserted.first().is_none_or(|w| w.detached);
    }
    false
}

#[cfg(test)]
mod tests;
