// Package deploy holds no code: its tests check the files in this folder
// (the container configuration, the Kubernetes manifests) and the
// Dockerfile against what tern serve reads, and build and run the image
// where a container engine can.
package deploy
