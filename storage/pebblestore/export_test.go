package pebblestore

// Fatal calls the store's Pebble logger's Fatalf, as Pebble does when it
// cannot go on.
func Fatal(s *Store, msg string) { logger{s}.Fatalf("%s", msg) }
