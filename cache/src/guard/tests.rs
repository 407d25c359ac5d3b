use super::*;

fn verdict(a: &str, b: &str) -> Result<(), Reject> {
    check(&features(a), &features(b))
}

#[test]
fn paraphrases_pass() {
    for (a, b) in [
        (
            "Natalia sold clips to 48 of her friends in April. How many clips did she sell?",
            "Natalia sold clips to 48 of her friends in April. How many clips did she sell in total?",
        ),
        ("What is the capital of France?", "what's the capital of France"),
        (
            "A train travels 120 km in 2 hours. What is its average speed?",
            "A train travels 120 km in 2 hours; what's its average speed?",
        ),
        ("Is 17 a prime number?", "Is the number 17 prime?"),
        ("It costs $1,000.", "It costs $1000."),
    ] {
        assert_eq!(verdict(a, b), Ok(()), "{a:?} vs {b:?}");
    }
}

#[test]
fn changed_numbers_are_rejected() {
    assert_eq!(
        verdict(
            "Natalia sold clips to 48 of her friends in April.",
            "Natalia sold clips to 49 of her friends in April."
        ),
        Err(Reject::Number)
    );
    assert_eq!(
        verdict("What is 3.5 + 2?", "What is 3.25 + 2?"),
        Err(Reject::Number)
    );
    assert_eq!(
        verdict("What is 15% of 80?", "What is 15 of 80?"),
        Err(Reject::Number)
    );
    assert_eq!(
        verdict("I have three apples.", "I have 4 apples."),
        Err(Reject::Number)
    );
    // Order matters: 5 apples and 3 pears is not 3 apples and 5 pears.
    assert_eq!(
        verdict("5 apples and 3 pears cost?", "3 apples and 5 pears cost?"),
        Err(Reject::Number)
    );
    assert_eq!(verdict("It costs $5.", "It costs €5."), Err(Reject::Number));
}

#[test]
fn units_and_dates_are_compared() {
    assert_eq!(
        verdict("Convert 5 miles to meters.", "Convert 5 km to meters."),
        Err(Reject::Unit)
    );
    assert_eq!(
        verdict(
            "Is the clinic open on Sundays?",
            "Is the clinic open on Mondays?"
        ),
        Err(Reject::Unit)
    );
}

#[test]
fn negation_and_polarity_are_compared() {
    assert_eq!(
        verdict(
            "Is the clinic open on Sundays?",
            "Is the clinic closed on Sundays?"
        ),
        Err(Reject::Polarity)
    );
    assert_eq!(
        verdict("Which numbers are prime?", "Which numbers are not prime?"),
        Err(Reject::Negation)
    );
    assert_eq!(
        verdict(
            "Can I take ibuprofen with food?",
            "Can't I take ibuprofen with food?"
        ),
        Err(Reject::Negation)
    );
    assert_eq!(
        verdict(
            "What is the largest prime below 50?",
            "What is the smallest prime below 50?"
        ),
        Err(Reject::Polarity)
    );
}

#[test]
fn swapped_or_replaced_names_are_rejected() {
    assert_eq!(
        verdict("Does Alice owe Bob money?", "Does Bob owe Alice money?"),
        Err(Reject::Entity)
    );
    assert_eq!(
        verdict(
            "What is the capital of France?",
            "What is the capital of Spain?"
        ),
        Err(Reject::Entity)
    );
}

#[test]
fn a_different_question_on_the_same_topic_is_rejected() {
    assert_eq!(
        verdict(
            "How do I sort a list of integers in Python quickly?",
            "How do I reverse a list of strings in Python safely?"
        ),
        Err(Reject::Content)
    );
}

#[test]
fn sentence_initial_function_words_are_not_names() {
    let f = features("What is the capital of France? Please answer briefly.");
    assert_eq!(f.entities, vec!["france".to_string()]);
}

#[test]
fn split_contractions_count_as_negations() {
    let a = features("Mr. Clinton 's national security adviser , Sandy Berger , said that the White House wasn 't informed of the FBI activities .");
    let b = features("Clinton ’ s national security adviser , Sandy Berger , said in an interview that the White House was not informed of the FBI activities .");
    assert_eq!(a.negations, b.negations, "{a:?}\n{b:?}");
}

#[test]
fn percent_spellings_agree() {
    assert_eq!(
        verdict(
            "Shipments increased 48 percent, against 31 per cent for Dell.",
            "Shipments increased 48%, against 31% for Dell."
        ),
        Ok(())
    );
}
