import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import Testing
import Yams

extension IntegrationTests {
    /// `config/kubernetes/`: no cluster is at hand, so the manifests are held to Kubernetes' own schemas
    /// (kubernetes-validate, strict: an unknown field fails) and to what a sidecar needs.
    @Suite struct KubernetesManifests {
        private static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("config/kubernetes")

        private var manifests: [URL] {
            get throws {
                try FileManager.default.contentsOfDirectory(at: Self.directory, includingPropertiesForKeys: nil)
                    .filter { $0.pathExtension == "yaml" }.sorted { $0.path < $1.path }
            }
        }

        @Test func everyManifestPassesTheSchemasOfKubernetes129() async throws {
            let files = try self.manifests
            #expect(files.count >= 3)
            for file in files {
                let result = try await Command.run(
                    ["python3", "-m", "kubernetes_validate", "--strict", "-k", "1.29.0", file.path],
                    timeout: 60
                )
                #expect(result.status == 0, "\(file.lastPathComponent): \(result.stdout)\(result.stderr)")
                #expect(result.stdout.contains("passed") && !result.stdout.contains("ERROR"), "\(result.stdout)")
            }
        }

        /// The sidecar: native (an init container that restarts Always), probed on /healthz for liveness and
        /// /ready for readiness, given the time its shutdown takes, and running a configuration Headway accepts.
        @Test func theSidecarIsNativeProbedAndGivenTimeToDrain() throws {
            let text = try String(
                contentsOf: Self.directory.appendingPathComponent("client-with-headway-sidecar.yaml"),
                encoding: .utf8
            )
            let documents = try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
            let configMap = try #require(documents.first { $0["kind"] as? String == "ConfigMap" })
            let yaml = try #require((configMap["data"] as? [String: Any])?["headway.yaml"] as? String)
            let configuration = try HeadwayConfiguration.load(yaml: yaml, overrides: .init())
            let deployment = try #require(documents.first { $0["kind"] as? String == "Deployment" })
            let pod = try #require(
                ((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]
            )
            let sidecar = try #require(
                (pod["initContainers"] as? [[String: Any]])?.first { $0["name"] as? String == "headway" }
            )
            #expect(sidecar["restartPolicy"] as? String == "Always")
            func probeURL(_ name: String) -> String? {
                ((sidecar[name] as? [String: Any])?["exec"] as? [String: Any]).flatMap {
                    ($0["command"] as? [String])?.last
                }
            }
            #expect(probeURL("livenessProbe") == "http://\(configuration.admin)/healthz")
            #expect(probeURL("readinessProbe") == "http://\(configuration.admin)/ready")
            #expect((sidecar["args"] as? [String])?.contains("--watch-config") == true)
            let grace = try #require(pod["terminationGracePeriodSeconds"] as? Int)
            let shutdown = configuration.shutdownDelay + configuration.drainTimeout
            #expect(configuration.shutdownDelay >= .seconds(1), "a sidecar needs a shutdown_delay")
            #expect(TimeAmount.seconds(Int64(grace)) > shutdown, "terminationGracePeriodSeconds \(grace) is too short")
        }
    }
}
