// Package flowlog writes tunwall's structured log: the verdict, close,
// refused and suppressed events of the flow log contract, and the process
// lifecycle events, through an injected zerolog.Logger.
//
// Deny, reject and refused lines are rate-limited per window; what was held
// back is reported as one "suppressed" event with its count.
package flowlog
