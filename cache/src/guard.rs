//! The guard: before the pair check ([`crate::pair`]), rejects candidates whose problem states
//! other quantities than the request's. Quantities are not a matter of wording: any changed
//! number changes the answer, so these checks are exact.
//!
//! Checks, in order (the first that fails names the rejection):
//! - `number`: the numbers (digits, decimals, fractions, number words, currency and percent
//!   signs attached to them) in order of appearance must be identical;
//! - `unit`: units, months, weekdays and currencies written as words must match as a multiset.
//!
//! Everything else — negation, opposite words, names, scope — is the pair check's: it judges
//! the shape of the difference, not a list of words.

/// Why a candidate was rejected (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Different numbers.
    Number,
    /// Different units, dates or currencies.
    Unit,
    /// The pair check's learned score was too low (a different problem in similar words).
    Pair,
}

impl Reject {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reject::Number => "number",
            Reject::Unit => "unit",
            Reject::Pair => "pair",
        }
    }

    /// Every label, for pre-registering metric series.
    pub const ALL: [Reject; 3] = [Reject::Number, Reject::Unit, Reject::Pair];
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

/// A problem broken into what the guard compares.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Features {
    numbers: Vec<String>,
    units: Vec<String>,
}

/// Extracts the features of one problem text.
pub fn features(text: &str) -> Features {
    let mut f = Features::default();
    for raw in percent_signs(tokens(text)) {
        match raw {
            Token::Number(n) => f.numbers.push(n),
            Token::Break => {}
            Token::Word(w) => {
                let folded: String = w
                    .to_lowercase()
                    .chars()
                    .filter(|c| *c != '\'' && *c != '’')
                    .collect();
                if let Some((_, n)) = NUMBER_WORDS.iter().find(|(k, _)| *k == folded) {
                    f.numbers.push((*n).to_string());
                }
                if UNIT_WORDS.contains(&folded.as_str()) {
                    f.units.push(folded);
                }
            }
        }
    }
    f.units.sort();
    f
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

/// Whether a cached problem states the query's quantities; `Err` names the first difference.
pub fn check(query: &Features, cached: &Features) -> Result<(), Reject> {
    if query.numbers != cached.numbers {
        return Err(Reject::Number);
    }
    if query.units != cached.units {
        return Err(Reject::Unit);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
