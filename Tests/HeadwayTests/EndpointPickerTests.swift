import Testing

@testable import Headway

struct EndpointPickerTests {
    @Test(arguments: [1, 2, 3, 7])
    func roundRobinSpreadsExactly(count: Int) {
        var picker = EndpointPicker(policy: .roundRobin)
        picker.endpointSetChanged(count: count)
        var hits = Array(repeating: 0, count: count)
        for _ in 0..<(count * 100) {
            hits[picker.pick(count: count, excluding: nil)!] += 1
        }
        #expect(hits == Array(repeating: 100, count: count))
    }

    @Test func roundRobinVisitsEveryEndpointInTurn() {
        var picker = EndpointPicker(policy: .roundRobin)
        picker.endpointSetChanged(count: 4)
        let first = picker.pick(count: 4, excluding: nil)!
        let next = (0..<7).map { _ in picker.pick(count: 4, excluding: nil)! }
        #expect(next == (1...7).map { (first + $0) % 4 })
    }

    @Test func exclusionIsHonouredWhenAnotherEndpointExists() {
        var picker = EndpointPicker(policy: .roundRobin)
        for _ in 0..<20 {
            #expect(picker.pick(count: 3, excluding: 1) != 1)
        }
        #expect(picker.pick(count: 1, excluding: 0) == 0, "the only endpoint is still chosen")
    }

    @Test func aRetryDoesNotShiftTheRotation() {
        var picker = EndpointPicker(policy: .roundRobin)
        picker.endpointSetChanged(count: 2)
        // Endpoint 0 fails every first attempt; the retries must not make it the first choice every time.
        var firstAttempts = [0, 0]
        for _ in 0..<10 {
            let first = picker.pick(count: 2, excluding: nil)!
            firstAttempts[first] += 1
            if first == 0 { #expect(picker.pick(count: 2, excluding: 0) == 1) }
        }
        #expect(firstAttempts == [5, 5])
    }

    @Test func emptySetPicksNothing() {
        var picker = EndpointPicker(policy: .roundRobin)
        picker.endpointSetChanged(count: 0)
        #expect(picker.pick(count: 0, excluding: nil) == nil)
    }

    @Test func startingPointsDifferAcrossPickers() {
        // A fleet restarted together must not all start on the same pod.
        let starts = Set((0..<50).map { _ -> Int in
            var picker = EndpointPicker(policy: .roundRobin)
            picker.endpointSetChanged(count: 10)
            return picker.pick(count: 10, excluding: nil)!
        })
        #expect(starts.count > 3)
    }
}
