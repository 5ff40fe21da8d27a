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
	DefaultMaxGuildsPerSession   = 2500 // Discord's sharding threshold
	DefaultMaxConnsPerIP         = 1000 // per listener
)
