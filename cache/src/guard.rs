//! The guard: after the similarity search, rejects candidates whose problem differs from the
//! request's in a way that changes the answer even though the embeddings are close.
//!
//! Checks, in order (the first that fails names the rejection):
//! - `number`: the numbers (digits, decimals, fractions, number words, currency and percent
//!   signs attached to them) in order of appearance must be identical;
//! - `unit`: units, months, weekdays and currencies written as words must match as a multiset;
//! - `negation`: the count of negation cues (`not`, `no`, `never`, `n't`, `without`, …) must match;
//! - `polarity`: words from opposing pairs (open/closed, more/less, before/after, max/min, …)
//!   must match as a multiset;
//! - `entity`: names (capitalised words that are not sentence-initial function words) must be
//!   identical in order, so a swapped or replaced name is rejected;
//! - `content`: after the checks above, the words one problem has and the other lacks (stop words
//!   and inflections aside) may be at most `max(2, 25 %)` of the shorter problem's content words:
//!   paraphrases pass, a different question on the same topic does not.

use std::collections::HashMap;

/// Why a candidate was rejected (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Different numbers.
    Number,
    /// Different units, dates or currencies.
    Unit,
    /// Different negation.
    Negation,
    /// Opposite polarity words.
    Polarity,
    /// Different or swapped names.
    Entity,
    /// Too many different content words.
    Content,
}

impl Reject {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Number => "number",
            Reject::Unit => "unit",
            Reject::Negation => "negation",
            Reject::Polarity => "polarity",
            Reject::Entity => "entity",
            Reject::Content => "content",
        }
    }

    /// Every label, for pre-registering metric series.
    pub const ALL: [Reject; 6] = [
        Reject::Number,
        Reject::Unit,
        Reject::Negation,
        Reject::Polarity,
        Reject::Entity,
        Reject::Content,
    ];
}

const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("thirteen", "13"),
    ("fourteen", "14"),
    ("fifteen", "15"),
    ("sixteen", "16"),
    ("seventeen", "17"),
    ("eighteen", "18"),
    ("nineteen", "19"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("sixty", "60"),
    ("seventy", "70"),
    ("eighty", "80"),
    ("ninety", "90"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("million", "1000000"),
    ("billion", "1000000000"),
    ("half", "1/2"),
    ("third", "1/3"),
    ("quarter", "1/4"),
    ("twice", "x2"),
    ("double", "x2"),
    ("triple", "x3"),
    ("dozen", "12"),
    ("first", "#1"),
    ("second", "#2"),
    ("fourth", "#4"),
    ("fifth", "#5"),
    ("last", "#last"),
];

const UNIT_WORDS: &[&str] = &[
    "mm",
    "cm",
    "m",
    "km",
    "meter",
    "meters",
    "metre",
    "metres",
    "kilometer",
    "kilometers",
    "inch",
    "inches",
    "foot",
    "feet",
    "yard",
    "yards",
    "mile",
    "miles",
    "g",
    "kg",
    "gram",
    "grams",
    "kilogram",
    "kilograms",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "ounce",
    "ounces",
    "oz",
    "ton",
    "tons",
    "l",
    "ml",
    "liter",
    "liters",
    "litre",
    "litres",
    "gallon",
    "gallons",
    "cup",
    "cups",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "decade",
    "decades",
    "century",
    "percent",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "euro",
    "euros",
    "yen",
    "usd",
    "eur",
    "gbp",
    "celsius",
    "fahrenheit",
    "kelvin",
    "mph",
    "kph",
    "kmh",
    "watt",
    "watts",
    "kw",
    "kwh",
    "volt",
    "volts",
    "byte",
    "bytes",
    "kb",
    "mb",
    "gb",
    "tb",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "mondays",
    "tuesdays",
    "wednesdays",
    "thursdays",
    "fridays",
    "saturdays",
    "sundays",
    "today",
    "tomorrow",
    "yesterday",
    "pm",
];

const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "neither",
    "nor",
    "nowhere",
    "without",
    "cannot",
    "cant",
    "dont",
    "doesnt",
    "didnt",
    "isnt",
    "arent",
    "wasnt",
    "werent",
    "wont",
    "wouldnt",
    "shouldnt",
    "couldnt",
    "hasnt",
    "havent",
    "hadnt",
    "mustnt",
    "neednt",
    "aint",
    "except",
    "excluding",
    "unless",
    "false",
    "untrue",
    // Contractions split the Penn Treebank way ("doesn 't") leave these halves.
    "doesn",
    "don",
    "didn",
    "isn",
    "aren",
    "wasn",
    "weren",
    "wouldn",
    "shouldn",
    "couldn",
    "hasn",
    "haven",
    "hadn",
    "mustn",
    "needn",
];

/// Words of opposing pairs: a candidate must use the same ones.
const POLARITY: &[&str] = &[
    "open",
    "opened",
    "opens",
    "closed",
    "close",
    "closes",
    "more",
    "less",
    "fewer",
    "most",
    "least",
    "greater",
    "smaller",
    "larger",
    "bigger",
    "lower",
    "higher",
    "largest",
    "smallest",
    "biggest",
    "highest",
    "lowest",
    "maximum",
    "minimum",
    "max",
    "min",
    "before",
    "after",
    "above",
    "below",
    "over",
    "under",
    "increase",
    "increased",
    "increases",
    "decrease",
    "decreased",
    "decreases",
    "add",
    "added",
    "adds",
    "subtract",
    "subtracted",
    "remove",
    "removed",
    "gain",
    "gained",
    "lose",
    "lost",
    "loses",
    "win",
    "won",
    "wins",
    "buy",
    "buys",
    "bought",
    "sell",
    "sells",
    "sold",
    "give",
    "gives",
    "gave",
    "receive",
    "receives",
    "received",
    "borrow",
    "lend",
    "lent",
    "earn",
    "earned",
    "spend",
    "spent",
    "pay",
    "paid",
    "profit",
    "loss",
    "true",
    "right",
    "wrong",
    "correct",
    "incorrect",
    "always",
    "sometimes",
    "allowed",
    "forbidden",
    "legal",
    "illegal",
    "safe",
    "unsafe",
    "dangerous",
    "possible",
    "impossible",
    "first",
    "last",
    "start",
    "end",
    "begin",
    "finish",
    "early",
    "late",
    "earlier",
    "later",
    "hot",
    "cold",
    "warm",
    "cool",
    "fast",
    "slow",
    "faster",
    "slower",
    "inside",
    "outside",
    "yes",
    "positive",
    "negative",
    "even",
    "odd",
    "prime",
    "composite",
    "only",
    "both",
    "either",
    "multiply",
    "multiplied",
    "divide",
    "divided",
    "times",
    "plus",
    "minus",
    "average",
    "difference",
    "sum",
    "product",
    "ratio",
    "remaining",
    "left",
    "leave",
    "leaves",
    "arrive",
    "arrives",
    "north",
    "south",
    "east",
    "west",
    "left",
    "right",
    "top",
    "bottom",
];

/// Function words: ignored by the content check and not names when sentence-initial.
const STOP: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "do",
    "does",
    "did",
    "has",
    "have",
    "had",
    "having",
    "of",
    "to",
    "for",
    "at",
    "by",
    "with",
    "from",
    "into",
    "onto",
    "about",
    "as",
    "and",
    "or",
    "but",
    "if",
    "then",
    "so",
    "than",
    "that",
    "this",
    "these",
    "those",
    "there",
    "here",
    "it",
    "its",
    "i",
    "you",
    "we",
    "me",
    "my",
    "your",
    "our",
    "us",
    "them",
    "their",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "when",
    "where",
    "why",
    "how",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "please",
    "tell",
    "explain",
    "answer",
    "question",
    "solve",
    "find",
    "calculate",
    "compute",
    "determine",
    "give",
    "show",
    "let",
    "lets",
    "let's",
    "just",
    "also",
    "very",
    "really",
    "much",
    "many",
    "like",
    "kindly",
    "help",
    "want",
    "know",
    "need",
    "does",
    "doing",
    "s",
    "t",
    "d",
    "ll",
    "re",
    "ve",
    "hey",
    "hi",
    "hello",
    "thanks",
    "thank",
    "step",
    "briefly",
    "exactly",
    "actually",
    "ok",
    "okay",
    "well",
    "now",
    "in",
    "on",
    "out",
    "up",
];

/// A problem broken into what the guard compares.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Features {
    numbers: Vec<String>,
    units: Vec<String>,
    negations: usize,
    polarity: Vec<String>,
    entities: Vec<String>,
    content: Vec<String>,
}

/// Extracts the features of one problem text.
pub fn features(text: &str) -> Features {
    let mut f = Features::default();
    let mut sentence_start = true;
    let toks = percent_signs(tokens(text));
    for raw in toks {
        match raw {
            Token::Number(n) => {
                f.numbers.push(n);
                sentence_start = false;
            }
            Token::Break => sentence_start = true,
            Token::Word(w) => {
                let lower = w.to_lowercase();
                let folded: String = lower.chars().filter(|c| *c != '\'' && *c != '’').collect();
                let capitalised = w.chars().next().is_some_and(char::is_uppercase)
                    && w.chars().skip(1).any(char::is_lowercase)
                    || w.chars().count() > 1 && w.chars().all(|c| !c.is_lowercase());
                if let Some((_, n)) = NUMBER_WORDS.iter().find(|(k, _)| *k == folded) {
                    f.numbers.push((*n).to_string());
                } else if NEGATIONS.contains(&folded.as_str())
                    || lower.ends_with("n't")
                    || lower.ends_with("n’t")
                {
                    f.negations += 1;
                }
                if UNIT_WORDS.contains(&folded.as_str()) {
                    f.units.push(folded.clone());
                }
                if POLARITY.contains(&folded.as_str()) {
                    f.polarity.push(folded.clone());
                }
                let stop = STOP.contains(&folded.as_str());
                if capitalised && !(sentence_start && (stop || is_common_start(&folded))) {
                    f.entities.push(folded.clone());
                }
                if !stop && !NEGATIONS.contains(&folded.as_str()) {
                    f.content.push(stem(&folded));
                }
                sentence_start = false;
            }
        }
    }
    f.units.sort();
    f.polarity.sort();
    f
}

/// Words that start questions and instructions (so a capital letter there is not a name).
fn is_common_start(word: &str) -> bool {
    matches!(
        word,
        "write"
            | "list"
            | "name"
            | "describe"
            | "summarize"
            | "summarise"
            | "translate"
            | "given"
            | "suppose"
            | "assume"
            | "consider"
            | "in"
            | "on"
            | "after"
            | "before"
            | "each"
            | "every"
            | "all"
            | "some"
            | "one"
            | "two"
            | "three"
            | "yes"
            | "no"
            | "true"
            | "false"
            | "any"
            | "both"
            | "only"
            | "not"
            | "today"
            | "tomorrow"
    )
}

/// A crude inflection fold so "apples"/"apple" and "walked"/"walk" compare equal.
fn stem(w: &str) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if w.len() > suffix.len() + 2 && w.ends_with(suffix) {
            return w[..w.len() - suffix.len()].to_string();
        }
    }
    w.to_string()
}

#[derive(Debug)]
enum Token<'a> {
    Word(&'a str),
    Number(String),
    Break,
}

/// Splits into words, numbers (with an attached currency/percent sign) and sentence breaks.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (pos, c) = bytes[i];
        if c.is_ascii_digit()
            || (matches!(c, '$' | '€' | '£' | '¥' | '-' | '+' | '.')
                && bytes.get(i + 1).is_some_and(|(_, d)| d.is_ascii_digit()))
        {
            let mut j = i;
            let mut s = String::new();
            while j < bytes.len() {
                let ch = bytes[j].1;
                let next_digit = bytes.get(j + 1).is_some_and(|(_, d)| d.is_ascii_digit());
                if ch.is_ascii_digit()
                    || (j == i && matches!(ch, '$' | '€' | '£' | '¥' | '-' | '+'))
                    || (matches!(ch, '.' | '/' | ':') && next_digit)
                {
                    s.push(ch);
                } else if ch == ',' && next_digit {
                    // Thousands separator: 1,000 == 1000.
                } else {
                    break;
                }
                j += 1;
            }
            if bytes.get(j).is_some_and(|(_, ch)| *ch == '%') {
                s.push('%');
                j += 1;
            }
            out.push(Token::Number(normalise_number(&s)));
            i = j;
        } else if c.is_alphanumeric() {
            let mut j = i;
            while j < bytes.len() {
                let ch = bytes[j].1;
                let apostrophe = matches!(ch, '\'' | '’')
                    && bytes.get(j + 1).is_some_and(|(_, n)| n.is_alphabetic());
                if ch.is_alphanumeric() && !ch.is_ascii_digit() || apostrophe {
                    j += 1;
                } else {
                    break;
                }
            }
            if j == i {
                i += 1;
                continue;
            }
            let end = bytes.get(j).map_or(text.len(), |(p, _)| *p);
            out.push(Token::Word(&text[pos..end]));
            i = j;
        } else {
            if matches!(c, '.' | '?' | '!' | '\n' | ':' | ';') {
                out.push(Token::Break);
            }
            i += 1;
        }
    }
    out
}

/// "48 percent" and "48 per cent" become the number "48%", as "48%" is.
fn percent_signs(toks: Vec<Token<'_>>) -> Vec<Token<'_>> {
    let mut out: Vec<Token<'_>> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let word = |j: usize| match toks.get(j) {
            Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        };
        let after_number = matches!(out.last(), Some(Token::Number(n)) if !n.ends_with('%'));
        let skip = match word(i).as_deref() {
            Some("percent" | "pct") if after_number => 1,
            Some("per") if after_number && word(i + 1).as_deref() == Some("cent") => 2,
            _ => 0,
        };
        if skip > 0 {
            if let Some(Token::Number(n)) = out.last_mut() {
                n.push('%');
            }
            i += skip;
            continue;
        }
        out.push(match &toks[i] {
            Token::Word(w) => Token::Word(w),
            Token::Number(n) => Token::Number(n.clone()),
            Token::Break => Token::Break,
        });
        i += 1;
    }
    out
}

/// `3.50` == `3.5`, `+4` == `4`, `007` == `7`.
fn normalise_number(s: &str) -> String {
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
    {
        if let Ok(v) = rest.parse::<f64>() {
            return v.to_string();
        }
    }
    rest.to_string()
}

/// Whether a cached problem can answer the query; `Err` names the first difference found.
pub fn check(query: &Features, cached: &Features) -> Result<(), Reject> {
    if query.numbers != cached.numbers {
        return Err(Reject::Number);
    }
    if query.units != cached.units {
        return Err(Reject::Unit);
    }
    if query.negations != cached.negations {
        return Err(Reject::Negation);
    }
    if query.polarity != cached.polarity {
        return Err(Reject::Polarity);
    }
    if query.entities != cached.entities {
        return Err(Reject::Entity);
    }
    let diff = content_difference(&query.content, &cached.content);
    let shorter = query.content.len().min(cached.content.len());
    if diff > 2.max(shorter / 4) {
        return Err(Reject::Content);
    }
    Ok(())
}

/// Content words in one multiset and not the other (both ways).
fn content_difference(a: &[String], b: &[String]) -> usize {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in a {
        *counts.entry(w).or_default() += 1;
    }
    for w in b {
        *counts.entry(w).or_default() -= 1;
    }
    counts.values().map(|c| c.unsigned_abs() as usize).sum()
}

#[cfg(test)]
mod tests;
