/// This build's version, as `headway --version` prints it.
package enum HeadwayVersion {
    package static let string = "0.5.0"
}
