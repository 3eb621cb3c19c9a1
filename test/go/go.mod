// sdkcheck: runs Schematic's official Go SDK against our Redis (see main.go).
//
// go.sum has no lines for github.com/schematichq/schematic-go and
// github.com/schematichq/schematic-datastream-ws: when this was written the Go
// module proxy answered 403 ("This module version is not available") for both,
// so their hashes could not be obtained and verified. test/helpers/go-sdk.ts
// builds with GOFLAGS=-mod=mod, which adds them once the proxy serves them.
module sdkcheck

go 1.25.1

require github.com/schematichq/schematic-go v1.5.5

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/redis/go-redis/v9 v9.22.0 // indirect
	github.com/schematichq/schematic-datastream-ws v0.2.9 // indirect
	github.com/tetratelabs/wazero v1.12.0 // indirect
	go.uber.org/atomic v1.11.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
)
