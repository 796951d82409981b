// Package version carries the build's version and Neon-style build tag, set with -ldflags.
package version

// Version is the package version (set by the build).
var Version = "dev"

// BuildTag is the label Neon's metrics carry as build_tag; "latest" as in Neon when unset.
var BuildTag = "latest"
