//! MQTT topic filters (`FROM 'device/+/data'`) and the topic index that routes a message only to
//! the statements whose filter matches its topic. It knows nothing of SQL; statements and the host's
//! rule table call it.

use std::borrow::Borrow;
use std::collections::HashMap;

use crate::error::{ErrorKind, SqlError};

/// A validated MQTT topic filter: levels separated by `/`, `+` for exactly one level, `#` (last)
/// for any number of levels including none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    text: String,
}

impl TopicFilter {
    /// Checks `filter` against MQTT's rules: not empty, no NUL, `+` and `#` alone in their level,
    /// `#` only last.
    pub fn parse(filter: &str) -> Result<TopicFilter, SqlError> {
        let invalid = |start: usize, len: usize, message: &str| {
            Err(SqlError::at(
                ErrorKind::TopicFilter,
                filter,
                start,
                start + len,
                format!("invalid topic filter: {message}"),
            ))
        };
        if filter.is_empty() {
            return invalid(0, 0, "it is empty");
        }
        if let Some(at) = filter.find('\0') {
            return invalid(at, 1, "it contains a NUL character");
        }
        let mut offset = 0;
        let level_count = filter.split('/').count();
        for (index, level) in filter.split('/').enumerate() {
            let is_last = index + 1 == level_count;
            if level.contains('#') && (level != "#" || !is_last) {
                return invalid(
                    offset,
                    level.len(),
                    "`#` must be a whole level and the last one",
                );
            }
            if level.contains('+') && level != "+" {
                return invalid(offset, level.len(), "`+` must be a whole level");
            }
            offset += level.len() + 1;
        }
        Ok(TopicFilter {
            text: filter.to_owned(),
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a message published on `topic` matches, with MQTT semantics: wildcards never match
    /// a first level that starts with `$` (system topics such as `$aws/...`).
    pub fn matches(&self, topic: &str) -> bool {
        let mut filter_levels = self.text.split('/');
        let mut topic_levels = topic.split('/');
        let mut first = true;
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (Some("#"), level) => {
                    return !(first && level.is_some_and(|l| l.starts_with('$')));
                }
                (Some("+"), Some(level)) => {
                    if first && level.starts_with('$') {
                        return false;
                    }
                }
                (Some(expected), Some(level)) if expected == level => {}
                (None, None) => return true,
                _ => return false,
            }
            first = false;
        }
    }

    fn levels(&self) -> impl Iterator<Item = &str> {
        self.text.split('/')
    }
}

impl std::fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A trie over filter levels: looking a topic up costs a walk down its levels (plus the `+`
/// branches), not one match per registered filter, so a thousand rules on distinct topics cost
/// about as much as one.
#[derive(Debug)]
pub struct TopicIndex<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    exact: HashMap<Box<str>, Node<T>, foldhash::fast::FixedState>,
    single_level: Option<Box<Node<T>>>,
    /// Values whose filter ends with `#` right below this node.
    multi_level: Vec<T>,
    /// Values whose filter ends at this node.
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            exact: HashMap::default(),
            single_level: None,
            multi_level: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<T> Default for TopicIndex<T> {
    fn default() -> Self {
        TopicIndex::new()
    }
}

impl<T> TopicIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        TopicIndex {
            root: Node::default(),
            len: 0,
        }
    }

    /// How many values the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Registers `value` under `filter` (owned or borrowed); several values may share a filter.
    pub fn insert(&mut self, filter: impl Borrow<TopicFilter>, value: T) {
        let mut node = &mut self.root;
        for level in filter.borrow().levels() {
            node = match level {
                "#" => {
                    node.multi_level.push(value);
                    self.len += 1;
                    return;
                }
                "+" => node.single_level.get_or_insert_with(Box::default),
                _ => node.exact.entry(level.into()).or_default(),
            };
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Removes the values registered under exactly `filter` for which `unwanted` says true, and
    /// returns how many went.
    pub fn remove(&mut self, filter: &TopicFilter, mut unwanted: impl FnMut(&T) -> bool) -> usize {
        let mut node = &mut self.root;
        let mut slot = None;
        for level in filter.levels() {
            let next = match level {
                "#" => {
                    slot = Some(&mut node.multi_level);
                    break;
                }
                "+" => node.single_level.as_deref_mut(),
                _ => node.exact.get_mut(level),
            };
            match next {
                Some(next) => node = next,
                None => return 0,
            }
        }
        let values = slot.unwrap_or(&mut node.values);
        let before = values.len();
        values.retain(|value| !unwanted(value));
        let removed = before - values.len();
        self.len -= removed;
        removed
    }

    /// Calls `visit` with every value whose filter matches `topic`, without allocating.
    pub fn for_each_match<'s>(&'s self, topic: &str, mut visit: impl FnMut(&'s T)) {
        self.root.visit(Some(topic), true, &mut visit);
    }
}

impl<T> Node<T> {
    fn visit<'s>(&'s self, rest: Option<&str>, first: bool, visit: &mut impl FnMut(&'s T)) {
        let Some(rest) = rest else {
            self.values.iter().for_each(&mut *visit);
            // `a/#` also matches `a` itself.
            self.multi_level.iter().for_each(visit);
            return;
        };
        let (level, tail) = match rest.split_once('/') {
            Some((level, tail)) => (level, Some(tail)),
            None => (rest, None),
        };
        let wildcards_apply = !(first && level.starts_with('$'));
        if wildcards_apply {
            self.multi_level.iter().for_each(&mut *visit);
        }
        if let Some(child) = self.exact.get(level) {
            child.visit(tail, false, visit);
        }
        if let Some(child) = self.single_level.as_deref().filter(|_| wildcards_apply) {
            child.visit(tail, false, visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::parse(text).unwrap()
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        let f = filter("topic/+");
        assert!(f.matches("topic/subtopic"));
        assert!(f.matches("topic/"));
        assert!(!f.matches("topic/subtopic-3/details"));
        assert!(!f.matches("topic-2/subtopic-x"));
        assert!(!f.matches("topic"));
    }

    #[test]
    fn hash_matches_parent_and_all_descendants() {
        let f = filter("topic/#");
        assert!(f.matches("topic"));
        assert!(f.matches("topic/subtopic"));
        assert!(f.matches("topic/subtopic-3/details"));
        assert!(!f.matches("topic-2/subtopic-x"));
        assert!(filter("#").matches("a/b/c"));
    }

    #[test]
    fn wildcards_skip_dollar_topics_at_first_level() {
        assert!(!filter("#").matches("$aws/things/x"));
        assert!(!filter("+/things/x").matches("$aws/things/x"));
        assert!(filter("$aws/+/x").matches("$aws/things/x"));
    }

    #[test]
    fn rejects_misplaced_wildcards_with_position() {
        let error = TopicFilter::parse("a/#/b").unwrap_err();
        assert_eq!(error.kind, ErrorKind::TopicFilter);
        assert_eq!((error.line, error.column), (1, 3));
        assert!(TopicFilter::parse("a/b+").is_err());
        assert!(TopicFilter::parse("").is_err());
        assert!(TopicFilter::parse("a/x#").is_err());
    }

    #[test]
    fn index_finds_the_same_values_as_matching_each_filter() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+/+", "a/b/c", "$aws/x", "+", "a",
        ];
        let mut index = TopicIndex::new();
        for (i, f) in filters.iter().enumerate() {
            index.insert(filter(f), i);
        }
        for topic in ["a/b", "a", "a/b/c", "x/b", "$aws/x", "", "a/", "/b"] {
            let mut found = Vec::new();
            index.for_each_match(topic, |v| found.push(*v));
            found.sort_unstable();
            let expected: Vec<usize> = (0..filters.len())
                .filter(|&i| filter(filters[i]).matches(topic))
                .collect();
            assert_eq!(found, expected, "topic {topic:?}");
        }
    }

    #[test]
    fn removes_only_the_values_asked_for() {
        let mut index = TopicIndex::new();
        index.insert(filter("a/+"), 1);
        index.insert(filter("a/+"), 2);
        index.insert(filter("a/#"), 3);
        assert_eq!(index.remove(&filter("a/+"), |v| *v == 1), 1);
        assert_eq!(index.remove(&filter("a/#"), |_| true), 1);
        assert_eq!(index.remove(&filter("b/c"), |_| true), 0);
        let mut found = Vec::new();
        index.for_each_match("a/x", |v| found.push(*v));
        assert_eq!(found, vec![2]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_thousand_distinct_filters_yield_only_the_matching_one() {
        let mut index = TopicIndex::new();
        for i in 0..1000 {
            index.insert(filter(&format!("site/{i}/+/data")), i);
        }
        let mut visited = Vec::new();
        index.for_each_match("site/417/pump/data", |v| visited.push(*v));
        assert_eq!(visited, vec![417]);
    }
}
