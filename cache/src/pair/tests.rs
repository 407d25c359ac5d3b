use super::*;

#[test]
fn typos_case_spacing_and_punctuation_are_surface() {
    for (a, b) in [
        (
            "Who solved the riddle of the Gordian knot?",
            "Who solved the ridlde of the Gordian knot?",
        ),
        (
            "who was the first president",
            "Who was the  first president?",
        ),
        (
            "Which element has the symbol Fe?",
            "Which elemnt has the symbol Fe",
        ),
        (
            "If a train leaves at noon, when does it arrive?",
            "When does it arrive, if a train leaves at noon?",
        ),
    ] {
        assert!(
            shape(a, b).surface_only(),
            "{a:?} vs {b:?}: {:?}",
            shape(a, b)
        );
    }
}

#[test]
fn real_word_edits_are_not_surface() {
    for (a, b) in [
        (
            "Is it safe to eat raw eggs?",
            "Is it unsafe to eat raw eggs?",
        ),
        (
            "Is it safe to eat raw eggs?",
            "Is it not safe to eat raw eggs?",
        ),
        (
            "Who did Alice beat in the final?",
            "Who beat Alice in the final?",
        ),
        (
            "What is the capital of France?",
            "What is the capital of Spain?",
        ),
        ("Who won the cup in 2014?", "Who won the cup in 2018?"),
        // A one-letter difference at the start of a word, or in a short word, is no typo.
        ("Can a cat eat this?", "Can a bat eat this?"),
        // Nor one in a name, or at a word's end.
        (
            "Carol has 3 apples and Carl has 5. How many apples does Carol have?",
            "Carol has 3 apples and Carl has 5. How many apples does Carl have?",
        ),
        (
            "Find the root of the polynomial.",
            "Find the roots of the polynomial.",
        ),
        // Two slips in one problem are no longer a repeat.
        (
            "Is a causal relationship between smoking and cancer proven?",
            "Is a casual relationship between smkoing and cancer proven?",
        ),
        // Operators and symbols are words.
        ("What is 5 - 3?", "What is 5 + 3?"),
        ("Is 7 > 5?", "Is 7 < 5?"),
        ("Solve x^2 - 4 = 0", "Solve x^2 + 4 = 0"),
    ] {
        assert!(!shape(a, b).surface_only(), "{a:?} vs {b:?}");
    }
}

#[test]
fn texts_without_words_are_never_repeats() {
    assert!(!shape("🍎?", "🍌?").surface_only());
    assert!(!shape("", "").surface_only());
}

#[test]
fn edits_are_counted_by_kind() {
    let s = shape(
        "Is it safe to eat raw eggs?",
        "Is it not safe to eat raw eggs?",
    );
    assert_eq!((s.short_edits, s.content_edits, s.blocks), (1, 0, 1));
    let s = shape(
        "What is the capital of France?",
        "What is the capital of Spain?",
    );
    assert_eq!((s.content_edits, s.blocks), (2, 1));
    let s = shape("Who won the cup in 2014?", "Who won the cup in 2018?");
    assert_eq!(s.number_edits, 2);
    let s = shape("Who did Alice beat?", "Who beat Alice?");
    assert!(s.reordered || s.blocks > 0);
}

#[test]
fn swapped_words_are_reordered_not_rotated() {
    let s = shape("Did Alice call Bob?", "Did Bob call Alice?");
    assert!(s.reordered && !s.rotated, "{s:?}");
}

#[test]
fn below_the_threshold_only_a_surface_repeat_passes() {
    assert_eq!(
        judge(
            &words("who was the first presdient"),
            "Who was the first president?",
            0.62,
            0.85
        ),
        Some(Verdict::Surface)
    );
    assert_eq!(
        judge(
            &words("Who was the first president?"),
            "Who was the last president?",
            0.80,
            0.85
        ),
        None
    );
}

#[test]
fn long_texts_are_bounded_and_compared_to_their_end() {
    let a = "word ".repeat(10_000);
    let b = "other ".repeat(10_000);
    let s = shape(&a, &b);
    assert!(s.shorter <= MAX_WORDS);
    // A huge prompt keeps MAX_WORDS words, not one per word or symbol it holds.
    assert_eq!(words(&"+ ".repeat(1_000_000)).head.len(), MAX_WORDS);
    // The same long context with another question at its end is not a surface repeat.
    let context = "The report lists every shipment of the year in detail. ".repeat(60);
    let s = shape(
        &format!("{context} Which month had the most shipments?"),
        &format!("{context} Which month had the fewest shipments?"),
    );
    assert!(!s.surface_only(), "{s:?}");
    let same = format!("{context} Which month had the most shipments?");
    assert!(shape(&same, &same.to_uppercase()).surface_only());
}

#[test]
fn a_request_phrase_around_the_question_is_wrapped() {
    for (a, b) in [
        (
            "Which planet is closest to the Sun?",
            "Tell me: which planet is closest to the Sun?",
        ),
        (
            "How far is the Moon?",
            "How far is the Moon? Show your work.",
        ),
    ] {
        assert!(shape(a, b).wrapped, "{a:?} vs {b:?}");
    }
    for (a, b) in [
        (
            "A boy stands in the middle of a crowd.",
            "A sad boy stands in the middle of a crowd.",
        ),
        (
            "Two young women walking.",
            "Two young women walking through a park.",
        ),
        ("Is it safe?", "Is it not safe?"),
    ] {
        assert!(!shape(a, b).wrapped, "{a:?} vs {b:?}");
    }
}
