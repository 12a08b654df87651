// Package policy is tunwall's configuration and rule engine.
//
// It parses the YAML configuration file (rejecting unknown keys and reporting
// every problem as file:line:col), validates it into a typed Config, and
// compiles the policy section into a Policy whose Decide method judges one
// flow at a time: first matching rule wins, otherwise the default action.
//
// The package is pure: it reads only the files it is given, starts no
// goroutines, keeps no global state and imports nothing else of tunwall.
// Decide does not allocate, so it is safe to call on the packet path.
package policy
