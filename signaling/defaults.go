package signaling

import "time"

// The edge's defaults, in one place: zero fields of Config and VoiceConfig
// take them, and chorus serve's flags show them.
const (
	DefaultHeartbeatInterval     = 41250 * time.Millisecond // Discord's value (gateway.md §6)
	DefaultResumeWindow          = 3 * time.Minute
	DefaultMaxLog                = 1024    // events per session log
	DefaultMaxLogBytes           = 4 << 20 // payload bytes per session log
	DefaultPayloadsPerMinute     = 120     // per connection (gateway.md §13)
	DefaultIdentifiesPer5s       = 16      // max_concurrency
	DefaultWriteTimeout          = 10 * time.Second
	DefaultRESTRequestsPerSecond = 50
	DefaultIdentifyTimeout       = 10 * time.Second
	DefaultDrainWait             = 10 * time.Second // for other nodes to take a stopping node's sessions
	DefaultMaxGuildsPerSession   = 2500             // Discord's sharding threshold
	DefaultMaxConnsPerIP         = 1000             // per listener
	DefaultHTTPReadHeader        = 10 * time.Second
	DefaultHTTPRead              = 30 * time.Second // headers and body
	DefaultHTTPWrite             = 30 * time.Second
	DefaultHTTPIdle              = 60 * time.Second // between keep-alive requests
)

// Fixed timeouts of the edge, one name each.
const (
	// callTimeout bounds one call into the guild layer on a client's
	// behalf (identify, resume, a payload's effect, a session's end).
	callTimeout = 10 * time.Second
	// closeDrain is how long a closed connection's input is still read,
	// so that the client gets the close frame before the socket goes
	// (RFC 6455 §7.1.1: the server closes TCP last), and how long a
	// client's close waits for ours to be written.
	closeDrain = 2 * time.Second
	// drainAfterError is how long input is discarded after we closed a
	// connection for bad input.
	drainAfterError = 5 * time.Second
	// voiceWriteTimeout bounds one write to a voice websocket.
	voiceWriteTimeout = 10 * time.Second
	// controlWriteTimeout bounds writing a close frame.
	controlWriteTimeout = time.Second
	// identifyWindow is the window of max_concurrency: IdentifiesPer5s
	// identifies per user per window (gateway.md §13).
	identifyWindow = 5 * time.Second
	// restWindow is the window of RESTRequestsPerSecond.
	restWindow = time.Second
	// resubscribeFirst and resubscribeMax bound the backoff of a failed
	// subscription's retries: resubscribeFirst doubling to resubscribeMax,
	// resubscribeTries in all (about ten minutes).
	resubscribeFirst = time.Second
	resubscribeMax   = 30 * time.Second
	resubscribeTries = 25
)
