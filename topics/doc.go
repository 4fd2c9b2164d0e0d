// Package topics implements the MQTT topic rules a broker or client needs:
// validation of topic names and topic filters (including shared
// subscriptions of the form "$share/{group}/{filter}"), wildcard matching
// with the '$'-topic rule, a concurrent subscription index that answers
// "who is subscribed to this topic name" with a per-topic result cache, and
// a concurrent retained-message index that answers "which retained messages
// does this filter match".
//
// The package follows MQTT 3.1.1 and 5.0 section 4.7 (Topic Names and Topic
// Filters) and 4.8.2 (Shared Subscriptions). It depends only on the standard
// library.
//
// Topic names and filters are split into levels on '/'. Levels may be empty:
// "/a" has the two levels "" and "a". The single-level wildcard '+' matches
// exactly one level (possibly empty); the multi-level wildcard '#' matches
// any number of levels, including none, so "sport/#" also matches "sport".
// Filters whose first level is a wildcard never match topic names that start
// with '$' (such as "$SYS/broker/uptime").
//
// Index and Retained do not validate their input: callers validate names and
// filters with ValidateName and ValidateFilter first, and pass shared
// subscriptions split by ParseShared.
package topics
