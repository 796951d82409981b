// Package version carries the build's version and Neon-style build tag, set with -ldflags
// -X by scripts/lib.sh's build (VERSION and BUILD_TAG).
package version

// Version is the package version (set by the build).
var Version = "dev"

// BuildTag is the build tag (BUILD_TAG at build time): the build_tag label of
// compute_ctl_up and the first element of the remote-extension archive path, as in
// compute_ctl, which takes it from BUILD_TAG at compile time and defaults to "latest".
var BuildTag = "latest"
