// Covey's XCTest suite: the scenarios of python/tests and kotlin/src/test, through the
// uniffi-generated Swift (async/await). Every node binds 127.0.0.1 and dials only the other
// nodes of the same test; every test runs under a deadline and can fail but never hang.
//
// Needs macOS + Xcode and CoveyFFI.xcframework (swift/build-xcframework.sh); on Linux,
// swift/check.sh checks that every Covey name used here exists in the generated Covey.swift.

import Covey
import Foundation
import XCTest

let pass = "correct horse battery staple"

/// Generous: a cold CI machine, two cores, Argon2id at 64 MiB per join.
let deadlineSeconds: Double = 30

/// The whole of one test, cleanup excluded.
let testTimeoutSeconds: Double = 150

// MARK: - Support

/// A loopback-only config for `dataDir`.
func config(
    _ dataDir: String,
    keyStore: KeyStore? = nil,
    durability: Durability? = nil,
    maxPayloadBytes: UInt64? = nil,
    bootstrap: [String] = [],
    relayUrls: [String] = [],
    dhtRendezvous: Bool? = nil,
    dhtMaxValueBytes: UInt64? = nil
) -> NodeConfig {
    NodeConfig(
        dataDir: dataDir,
        bindAddr: "127.0.0.1:0",
        bootstrap: bootstrap,
        relayUrls: relayUrls,
        keyStore: keyStore,
        durability: durability,
        natTraversal: false,
        maxPayloadBytes: maxPayloadBytes,
        dhtRendezvous: dhtRendezvous,
        dhtMaxValueBytes: dhtMaxValueBytes
    )
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    let seconds: Double
    var description: String { "timed out after \(seconds) s waiting for \(what)" }
}

/// Resumes a continuation once, from whichever of the work and the timer finishes first.
final class Once<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Error>?

    init(_ continuation: CheckedContinuation<T, Error>) {
        self.continuation = continuation
    }

    func resume(_ result: Result<T, Error>) {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume(with: result)
    }
}

/// Runs `op`, failing with `TimedOut` after `seconds` even if `op` never returns (uniffi's
/// Swift futures do not observe task cancellation, so a task group alone could still hang).
func withDeadline<T>(
    _ seconds: Double,
    _ what: String,
    _ op: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        let once = Once(continuation)
        let timer = Task {
            try? await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
            once.resume(.failure(TimedOut(what: what, seconds: seconds)))
        }
        Task {
            do {
                let value = try await op()
                timer.cancel()
                once.resume(.success(value))
            } catch {
                timer.cancel()
                once.resume(.failure(error))
            }
        }
    }
}

/// Polls `probe` until it returns non-nil, failing after `deadline` seconds.
func eventually<T>(
    _ what: String,
    deadline: Double = deadlineSeconds,
    _ probe: () async throws -> T?
) async throws -> T {
    let start = Date()
    while true {
        if let value = try await probe() {
            return value
        }
        if Date().timeIntervalSince(start) > deadline {
            throw TimedOut(what: what, seconds: deadline)
        }
        try await Task.sleep(nanoseconds: 50_000_000)
    }
}

/// Polls a plain condition until it holds.
func waitUntil(_ what: String, deadline: Double = deadlineSeconds, _ cond: () -> Bool) async throws {
    _ = try await eventually(what, deadline: deadline) { cond() ? true : nil }
}

/// Makes `b` dial `a`. (Not named `link`: Darwin exports a C `link`.)
func linkNodes(_ a: Node, _ b: Node) async throws {
    try await b.addPeer(addr: try await a.addr())
}

func entriesOf(_ node: Node, _ groupId: String) async throws -> [Entry] {
    try await node.entries(groupId: groupId, afterCursor: 0, limit: 1000)
}

/// The kind of a Covey error, by name.
func kind(_ error: Error) -> String {
    guard let e = error as? CoveyError else { return "not a CoveyError: \(error)" }
    switch e {
    case .InvalidInput: return "InvalidInput"
    case .NotFound: return "NotFound"
    case .Conflict: return "Conflict"
    case .IdempotencyConflict: return "IdempotencyConflict"
    case .PermissionDenied: return "PermissionDenied"
    case .Crypto: return "Crypto"
    case .Storage: return "Storage"
    case .Network: return "Network"
    case .Timeout: return "Timeout"
    case .RateLimited: return "RateLimited"
    case .Closed: return "Closed"
    case .Internal: return "Internal"
    }
}

/// The human message of a Covey error.
func message(_ error: CoveyError) -> String {
    switch error {
    case .InvalidInput(let m), .NotFound(let m), .Conflict(let m), .IdempotencyConflict(let m),
        .PermissionDenied(let m), .Crypto(let m), .Storage(let m), .Network(let m),
        .Timeout(let m), .RateLimited(let m), .Closed(let m), .Internal(let m):
        return m
    }
}

/// Asserts that `op` throws a `CoveyError` of kind `expected`; returns its message.
@discardableResult
func expectError<T>(
    _ expected: String,
    _ what: String,
    file: StaticString = #filePath,
    line: UInt = #line,
    _ op: () async throws -> T
) async -> String {
    do {
        _ = try await op()
        XCTFail("\(what): expected CoveyError.\(expected), but the call succeeded", file: file, line: line)
        return ""
    } catch {
        XCTAssertEqual(kind(error), expected, "\(what): \(error)", file: file, line: line)
        return (error as? CoveyError).map(message) ?? ""
    }
}

/// An event listener implemented in Swift that keeps every event (called from Rust threads).
final class Recorder: EventListener, @unchecked Sendable {
    private let lock = NSLock()
    private var received: [Event] = []

    func onEvent(event: Event) throws {
        lock.lock()
        received.append(event)
        lock.unlock()
    }

    var events: [Event] {
        lock.lock()
        defer { lock.unlock() }
        return received
    }

    struct Received {
        let groupId: String
        let cursor: UInt64
        let entryId: String
        let author: String
    }

    var entriesReceived: [Received] {
        events.compactMap {
            if case let .entryReceived(groupId, cursor, entryId, author) = $0 {
                return Received(groupId: groupId, cursor: cursor, entryId: entryId, author: author)
            }
            return nil
        }
    }

    var groupsChanged: [(groupId: String, epoch: UInt64)] {
        events.compactMap {
            if case let .groupChanged(groupId, epoch) = $0 { return (groupId: groupId, epoch: epoch) }
            return nil
        }
    }

    var warningKinds: [String] {
        events.compactMap {
            if case let .warning(kind, _) = $0 { return kind }
            return nil
        }
    }

    var peersConnected: [String] {
        events.compactMap {
            if case let .peerConnected(peer) = $0 { return peer }
            return nil
        }
    }
}

struct ListenerBug: Error {}

/// Throws an undeclared Swift error from every call.
final class Thrower: EventListener, @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var calls: Int { lock.lock(); defer { lock.unlock() }; return count }

    func onEvent(event: Event) throws {
        lock.lock()
        count += 1
        lock.unlock()
        throw ListenerBug()
    }
}

/// Throws the declared ListenerError from every call.
final class DeclaredFailure: EventListener, @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var calls: Int { lock.lock(); defer { lock.unlock() }; return count }

    func onEvent(event: Event) throws {
        lock.lock()
        count += 1
        lock.unlock()
        throw ListenerError.Failed(message: "declared failure")
    }
}

/// Keeps secrets in a dictionary and records every call (names only, never values).
final class DictKeyStore: KeyStore, @unchecked Sendable {
    private let lock = NSLock()
    private var secretsByName: [String: Data] = [:]
    private var storedNames: [String] = []
    private var loadedNames: [String] = []

    func load(name: String) throws -> Data? {
        lock.lock()
        defer { lock.unlock() }
        loadedNames.append(name)
        return secretsByName[name]
    }

    func store(name: String, secret: Data) throws {
        lock.lock()
        defer { lock.unlock() }
        storedNames.append(name)
        secretsByName[name] = secret
    }

    func preset(_ name: String, _ secret: Data) {
        lock.lock()
        secretsByName[name] = secret
        lock.unlock()
    }

    var secrets: [String: Data] { lock.lock(); defer { lock.unlock() }; return secretsByName }
    var stored: [String] { lock.lock(); defer { lock.unlock() }; return storedNames }
    var loaded: [String] { lock.lock(); defer { lock.unlock() }; return loadedNames }
}

struct KeychainLocked: Error, CustomStringConvertible {
    var description: String { "keychain locked" }
}

final class BrokenKeyStore: KeyStore, @unchecked Sendable {
    let declared: Bool

    init(declared: Bool) {
        self.declared = declared
    }

    private func fail() -> Error {
        declared ? KeyStoreError.Failed(message: "keychain locked") : KeychainLocked()
    }

    func load(name: String) throws -> Data? {
        throw fail()
    }

    func store(name: String, secret: Data) throws {
        throw fail()
    }
}

final class Collect: Covey.Logger, @unchecked Sendable {
    private let lock = NSLock()
    private var kept: [LogRecord] = []

    func log(record: LogRecord) throws {
        lock.lock()
        kept.append(record)
        lock.unlock()
    }

    var records: [LogRecord] { lock.lock(); defer { lock.unlock() }; return kept }
}

final class ThrowingLogger: Covey.Logger, @unchecked Sendable {
    func log(record: LogRecord) throws {
        throw ListenerBug()
    }
}

/// Opens nodes for one test and shuts every one down at its end.
final class Nodes: @unchecked Sendable {
    let root: URL
    private let lock = NSLock()
    private var opened: [Node] = []
    private var subscriptions: [Covey.Subscription] = []
    private var count = 0

    init(root: URL) {
        self.root = root
    }

    func dir(_ name: String? = nil) -> String {
        lock.lock()
        count += 1
        let n = name ?? "node\(count)"
        lock.unlock()
        return root.appendingPathComponent(n).path
    }

    func open(
        _ dataDir: String? = nil,
        keyStore: KeyStore? = nil,
        maxPayloadBytes: UInt64? = nil,
        durability: Durability? = nil,
        dhtRendezvous: Bool? = nil,
        dhtMaxValueBytes: UInt64? = nil,
        bootstrap: [String] = []
    ) async throws -> Node {
        let node = try await Node.open(
            config: config(
                dataDir ?? dir(),
                keyStore: keyStore,
                durability: durability,
                maxPayloadBytes: maxPayloadBytes,
                bootstrap: bootstrap,
                dhtRendezvous: dhtRendezvous,
                dhtMaxValueBytes: dhtMaxValueBytes
            )
        )
        return track(node)
    }

    /// Tracks a node opened elsewhere so it is shut down at the end too.
    @discardableResult
    func track(_ node: Node) -> Node {
        lock.lock()
        opened.append(node)
        lock.unlock()
        return node
    }

    func subscribe(_ node: Node, _ listener: EventListener) throws -> Covey.Subscription {
        let sub = try node.subscribe(listener: listener)
        lock.lock()
        subscriptions.append(sub)
        lock.unlock()
        return sub
    }

    func close() async {
        lock.lock()
        let subs = subscriptions
        let nodes = opened
        subscriptions = []
        opened = []
        lock.unlock()
        for sub in subs {
            sub.cancel()
        }
        for node in nodes {
            do {
                try await node.shutdown()
            } catch {
                print("cleanup: shutdown failed: \(error)")
            }
        }
    }
}

class CoveyTestCase: XCTestCase {
    override func setUp() {
        super.setUp()
        // A backstop where XCTest enforces it; withDeadline fails each test first.
        executionTimeAllowance = 240
    }

    /// Runs `body` with a fresh `Nodes` on a temporary directory under a deadline, then shuts
    /// every node down (bounded too) and removes the directory.
    func coveyTest(
        timeout: Double = testTimeoutSeconds,
        _ body: @escaping @Sendable (Nodes) async throws -> Void
    ) async throws {
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("covey-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let nodes = Nodes(root: root)
        do {
            try await withDeadline(timeout, "the test body") { try await body(nodes) }
        } catch {
            _ = try? await withDeadline(30, "cleanup") { await nodes.close() }
            try? FileManager.default.removeItem(at: root)
            throw error
        }
        _ = try? await withDeadline(30, "cleanup") { await nodes.close() }
        try? FileManager.default.removeItem(at: root)
    }
}

// MARK: - Sync (python/tests/test_sync.py)

final class SyncTests: CoveyTestCase {
    func testTwoNodesJoinPublishAndReplicate() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let b = try await nodes.open()
            XCTAssertNotEqual(a.nodeId(), b.nodeId())

            let ga = try await a.joinPassphrase(passphrase: pass, name: "friends")
            let gb = try await b.joinPassphrase(passphrase: pass, name: "friends")
            XCTAssertEqual(ga.groupId, gb.groupId)
            XCTAssertEqual(ga.groupId.count, 64)
            XCTAssertEqual(ga.kind, .passphrase)
            XCTAssertEqual(ga.name, "friends")
            XCTAssertEqual(ga.epoch, 0)

            let seen = Recorder()
            _ = try nodes.subscribe(b, seen)

            let meta = try await a.publish(groupId: ga.groupId, payload: Data("hello from a".utf8))
            XCTAssertEqual(meta.author, a.nodeId())
            XCTAssertEqual(meta.seq, 1)
            XCTAssertEqual(meta.groupId, ga.groupId)
            XCTAssertEqual(meta.entryId.count, 64)

            try await linkNodes(a, b)

            let got = try await eventually("b to receive a's entry") {
                try await entriesOf(b, gb.groupId).first(where: { $0.entryId == meta.entryId })
            }
            XCTAssertEqual(got.payload, Data("hello from a".utf8))
            XCTAssertEqual(got.author, a.nodeId())
            XCTAssertEqual(got.seq, 1)
            XCTAssertEqual(got.lamport, meta.lamport)

            // Published after the link: pushed live.
            let meta2 = try await b.publish(groupId: gb.groupId, payload: Data("and back from b".utf8))
            _ = try await eventually("a to receive b's entry") {
                try await entriesOf(a, ga.groupId).first(where: { $0.entryId == meta2.entryId })
            }

            // The Swift listener saw the entry arrive, and the peer connect.
            let ev = try await eventually("an EntryReceived event on b") {
                seen.entriesReceived.first(where: { $0.entryId == meta.entryId })
            }
            XCTAssertEqual(ev.groupId, gb.groupId)
            XCTAssertEqual(ev.author, a.nodeId())
            XCTAssertEqual(ev.cursor, got.cursor)
            XCTAssertTrue(seen.peersConnected.contains(a.nodeId()))

            // Lookup by id, members and status.
            let one = try await b.entry(groupId: gb.groupId, entryId: meta.entryId)
            XCTAssertEqual(one?.payload, Data("hello from a".utf8))
            let none = try await b.entry(groupId: gb.groupId, entryId: String(repeating: "00", count: 32))
            XCTAssertNil(none)
            let members = try await b.members(groupId: gb.groupId)
            XCTAssertEqual(members.first(where: { $0.nodeId == b.nodeId() })?.isSelf, true)
            XCTAssertEqual(members.first(where: { $0.nodeId == a.nodeId() })?.lastSeq, 1)
            let status = try await b.status()
            XCTAssertEqual(status.nodeId, b.nodeId())
            XCTAssertEqual(status.groups, 1)
            XCTAssertEqual(status.entries, 2)
            XCTAssertTrue(status.connectedPeers.contains(a.nodeId()))
            XCTAssertGreaterThanOrEqual(status.counters.received, 1)
            XCTAssertEqual(status.counters.published, 1)
            let groups = try await b.groups()
            XCTAssertEqual(groups.map { $0.groupId }, [gb.groupId])
        }
    }

    func testThreeNodesConverge() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let b = try await nodes.open()
            let c = try await nodes.open()
            let all = [a, b, c]
            var groups: [GroupInfo] = []
            for n in all {
                groups.append(try await n.joinPassphrase(passphrase: pass, name: "three"))
            }
            let gid = groups[0].groupId
            XCTAssertTrue(groups.allSatisfy { $0.groupId == gid })

            // A star around a: b and c learn each other's entries through a.
            try await linkNodes(a, b)
            try await linkNodes(a, c)
            var published = Set<String>()
            for (i, n) in all.enumerated() {
                for j in 0..<3 {
                    let meta = try await n.publish(groupId: gid, payload: Data("node \(i) entry \(j)".utf8))
                    published.insert(meta.entryId)
                }
            }
            XCTAssertEqual(published.count, 9)
            let want = published

            for (i, n) in all.enumerated() {
                _ = try await eventually("all nine entries on node \(i)") { () async throws -> Bool? in
                    let ids = Set(try await entriesOf(n, gid).map { $0.entryId })
                    return ids == want ? true : nil
                }
            }

            // Paging by cursor is gapless and strictly increasing.
            let page1 = try await c.entries(groupId: gid, afterCursor: 0, limit: 4)
            XCTAssertEqual(page1.count, 4)
            let page2 = try await c.entries(groupId: gid, afterCursor: page1[page1.count - 1].cursor, limit: 100)
            let cursors = (page1 + page2).map { $0.cursor }
            XCTAssertEqual(cursors.count, 9)
            XCTAssertEqual(cursors, Array(Set(cursors)).sorted())
        }
    }

    func testIdempotentPublishAndConflict() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let g = try await a.joinPassphrase(passphrase: pass, name: "idem")
            let first = try await a.publish(groupId: g.groupId, payload: Data("payload".utf8), clientId: "client-1")
            let again = try await a.publish(groupId: g.groupId, payload: Data("payload".utf8), clientId: "client-1")
            XCTAssertEqual(again, first)
            let msg = await expectError("IdempotencyConflict", "same client id, other payload") {
                try await a.publish(groupId: g.groupId, payload: Data("other payload".utf8), clientId: "client-1")
            }
            XCTAssertTrue(msg.contains("client-1"), msg)
            let other = try await a.publish(groupId: g.groupId, payload: Data("payload".utf8), clientId: "client-2")
            XCTAssertNotEqual(other.entryId, first.entryId)
            XCTAssertEqual(other.seq, 2)
            let entries = try await entriesOf(a, g.groupId)
            XCTAssertEqual(entries.count, 2)
        }
    }

    func testDeliveryOfAFreshLocalEntry() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let g = try await a.joinPassphrase(passphrase: pass, name: "receipts")
            let meta = try await a.publish(groupId: g.groupId, payload: Data("mine".utf8))
            // Nobody else has it yet, and nobody else is known.
            let d = try await a.delivery(groupId: g.groupId, entryId: meta.entryId)
            XCTAssertTrue(d.ackedBy.isEmpty)
            XCTAssertFalse(d.allMembers)
            await expectError("NotFound", "delivery of an unknown entry") {
                try await a.delivery(groupId: g.groupId, entryId: String(repeating: "00", count: 32))
            }
            await expectError("NotFound", "delivery in an unknown group") {
                try await a.delivery(groupId: String(repeating: "cd", count: 32), entryId: meta.entryId)
            }
            await expectError("InvalidInput", "delivery with an entry id not hex") {
                try await a.delivery(groupId: g.groupId, entryId: "xyz")
            }
        }
    }

    func testDhtOnALoneNode() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            // With no DHT peers the record is kept locally.
            let seq = try await a.dhtPut(name: "n", value: Data("v1".utf8), ttlSecs: 60, expectedSeq: nil)
            XCTAssertEqual(seq, 1)
            let r = try await a.dhtGet(publisher: a.nodeId(), name: "n")
            XCTAssertEqual(r?.publisher, a.nodeId())
            XCTAssertEqual(r?.name, "n")
            XCTAssertEqual(r?.value, Data("v1".utf8))
            XCTAssertEqual(r?.seq, 1)
            await expectError("Conflict", "dht put with a stale expected seq") {
                _ = try await a.dhtPut(name: "n", value: Data("v2".utf8), ttlSecs: 60, expectedSeq: 0)
            }
            await expectError("InvalidInput", "dht put with an empty name") {
                _ = try await a.dhtPut(name: "", value: Data("v".utf8), ttlSecs: 60, expectedSeq: nil)
            }
            let providers = try await a.dhtProviders(key: Data("unknown".utf8))
            XCTAssertTrue(providers.isEmpty)
        }
    }

    func testDhtStatusAndValueLimitOnALoneNode() async throws {
        try await coveyTest { nodes in
            // The default limit is 1 KiB: 1024 bytes go in, 1025 do not.
            let a = try await nodes.open()
            let status = try await a.status()
            XCTAssertEqual(status.dht.contacts, 0, "\(status.dht)")
            XCTAssertEqual(status.dht.rendezvousFound, 0, "\(status.dht)")
            let seq = try await a.dhtPut(name: "d", value: Data(count: 1024), ttlSecs: 60, expectedSeq: nil)
            XCTAssertEqual(seq, 1)
            let msg = await expectError("InvalidInput", "1025 bytes against the default") {
                try await a.dhtPut(name: "d", value: Data(count: 1025), ttlSecs: 60, expectedSeq: nil)
            }
            XCTAssertTrue(msg.contains("1024"), msg)

            // A configured 2 KiB limit, with rendezvous off.
            let b = try await nodes.open(dhtRendezvous: false, dhtMaxValueBytes: 2048)
            let bseq = try await b.dhtPut(
                name: "v", value: Data(repeating: 0x79, count: 2048), ttlSecs: 60, expectedSeq: nil)
            XCTAssertEqual(bseq, 1)
            let msg2 = await expectError("InvalidInput", "2049 bytes against 2048") {
                try await b.dhtPut(name: "v", value: Data(count: 2049), ttlSecs: 60, expectedSeq: nil)
            }
            XCTAssertTrue(msg2.contains("2048"), msg2)
            // The refused put changed nothing.
            let r = try await b.dhtGet(publisher: b.nodeId(), name: "v")
            XCTAssertEqual(r?.seq, 1)
            XCTAssertEqual(r?.value, Data(repeating: 0x79, count: 2048))
            let bstatus = try await b.status()
            XCTAssertEqual(bstatus.dht.contacts, 0, "\(bstatus.dht)")
            XCTAssertEqual(bstatus.dht.rendezvousFound, 0, "\(bstatus.dht)")
        }
    }

    func testDhtValueLimitOutOfRangeIsRefusedAtOpen() async throws {
        try await coveyTest { nodes in
            let limits: [UInt64] = [0, 32 * 1024 + 1, 40_000, UInt64.max]
            for bytes in limits {
                await expectError("InvalidInput", "dhtMaxValueBytes \(bytes)") {
                    nodes.track(try await Node.open(config: config(nodes.dir("n\(bytes)"), dhtMaxValueBytes: bytes)))
                }
            }
            // The 32 KiB ceiling itself is allowed.
            let n = try await nodes.open(dhtMaxValueBytes: 32 * 1024)
            let seq = try await n.dhtPut(name: "big", value: Data(count: 32 * 1024), ttlSecs: 60, expectedSeq: nil)
            XCTAssertEqual(seq, 1)
        }
    }

    func testPauseResumeAndNetworkChanged() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            try await a.pause()
            let paused = try await a.status()
            XCTAssertTrue(paused.paused)
            try await a.resume()
            let resumed = try await a.status()
            XCTAssertFalse(resumed.paused)
            try await a.networkChanged()
        }
    }

    func testConcurrentCallsFromTasks() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let g = try await a.joinPassphrase(passphrase: pass, name: "concurrent")
            let gid = g.groupId
            let seqs = try await withThrowingTaskGroup(of: UInt64.self) { group -> [UInt64] in
                for i in 0..<50 {
                    group.addTask { try await a.publish(groupId: gid, payload: Data("\(i)".utf8)).seq }
                }
                var out: [UInt64] = []
                for try await seq in group {
                    out.append(seq)
                }
                return out
            }
            XCTAssertEqual(seqs.sorted(), Array(1...50).map { UInt64($0) })
            let counts = try await withThrowingTaskGroup(of: UInt64.self) { group -> [UInt64] in
                for _ in 0..<20 {
                    group.addTask { try await a.status().entries }
                }
                var out: [UInt64] = []
                for try await n in group {
                    out.append(n)
                }
                return out
            }
            XCTAssertTrue(counts.allSatisfy { $0 == 50 })
        }
    }

    func testAnAbandonedCallLeavesTheNodeUsable() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            // Argon2id takes far longer than 1 ms: the caller gives up, the node does not care.
            do {
                _ = try await withDeadline(0.001, "a join") {
                    try await a.joinPassphrase(passphrase: pass, name: "slow")
                }
            } catch is TimedOut {
                // expected
            }
            let g = try await a.joinPassphrase(passphrase: pass, name: "slow")
            _ = try await a.publish(groupId: g.groupId, payload: Data("fine".utf8))
            let status = try await a.status()
            XCTAssertEqual(status.entries, 1)
        }
    }
}

// MARK: - Errors (python/tests/test_errors.py)

final class ErrorTests: CoveyTestCase {
    func testErrorKindsForBadInput() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let g = try await a.joinPassphrase(passphrase: pass, name: "errors")
            let own = try await a.addr()

            let msg = await expectError("InvalidInput", "bad ticket") { try await a.addPeer(addr: "not a ticket") }
            XCTAssertTrue(msg.contains("ticket"), msg)
            await expectError("InvalidInput", "own address") { try await a.addPeer(addr: own) }
            await expectError("NotFound", "unknown group") {
                try await a.publish(groupId: String(repeating: "ab", count: 32), payload: Data("x".utf8))
            }
            await expectError("NotFound", "members of unknown group") {
                try await a.members(groupId: String(repeating: "cd", count: 32))
            }
            await expectError("InvalidInput", "group id not hex") {
                try await a.publish(groupId: "not-hex", payload: Data("x".utf8))
            }
            await expectError("InvalidInput", "entry id not hex") {
                try await a.entry(groupId: g.groupId, entryId: "xyz")
            }
            await expectError("InvalidInput", "empty passphrase") {
                try await a.joinPassphrase(passphrase: "", name: "name")
            }
            await expectError("InvalidInput", "empty name") {
                try await a.joinPassphrase(passphrase: pass, name: "")
            }
            await expectError("InvalidInput", "limit 0") {
                try await a.entries(groupId: g.groupId, afterCursor: 0, limit: 0)
            }
            await expectError("InvalidInput", "empty client id") {
                try await a.publish(groupId: g.groupId, payload: Data("x".utf8), clientId: "")
            }
            // The node is still fine.
            let status = try await a.status()
            XCTAssertEqual(status.groups, 1)
        }
    }

    func testWeakPassphraseIsInvalidInput() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            // zxcvbn score 2 of 4, under the floor of 3: refused before any key derivation.
            let msg = await expectError("InvalidInput", "score 2") {
                try await a.joinPassphrase(passphrase: "tiger7window", name: "weak")
            }
            XCTAssertTrue(msg.contains("too weak"), msg)
            XCTAssertFalse(msg.contains("tiger7window"), msg)
            // Strong alone, but it is the group's name.
            await expectError("InvalidInput", "the group's name") {
                try await a.joinPassphrase(
                    passphrase: "kestrel hollow lantern society", name: "Kestrel Hollow Lantern Society")
            }
            let status = try await a.status()
            XCTAssertEqual(status.groups, 0)
        }
    }

    func testOversizedPayloadIsInvalidInput() async throws {
        try await coveyTest { nodes in
            let small = try await nodes.open(maxPayloadBytes: 1024)
            let g = try await small.joinPassphrase(passphrase: pass, name: "small")
            _ = try await small.publish(groupId: g.groupId, payload: Data(repeating: 0x78, count: 1024))
            let msg = await expectError("InvalidInput", "1025 bytes against 1024") {
                try await small.publish(groupId: g.groupId, payload: Data(repeating: 0x78, count: 1025))
            }
            XCTAssertTrue(msg.contains("1024"), msg)

            // A huge payload against the default 1 MiB limit.
            let big = try await nodes.open()
            let g2 = try await big.joinPassphrase(passphrase: pass, name: "big")
            await expectError("InvalidInput", "16 MiB against the default") {
                try await big.publish(groupId: g2.groupId, payload: Data(count: 16 * 1024 * 1024))
            }
        }
    }

    func testDataDirInUseIsConflict() async throws {
        try await coveyTest { nodes in
            let d = nodes.dir("shared")
            _ = try await nodes.open(d)
            await expectError("Conflict", "second open of one data dir") {
                nodes.track(try await Node.open(config: config(d)))
            }
        }
    }

    func testBadConfigIsInvalidInput() async throws {
        try await coveyTest { nodes in
            let cases: [(String, NodeConfig)] = [
                ("bind addr", NodeConfig(dataDir: nodes.dir("a"), bindAddr: "nowhere")),
                ("empty data dir", NodeConfig(dataDir: "")),
                ("zero payload limit", config(nodes.dir("b"), maxPayloadBytes: 0)),
                ("huge payload limit", config(nodes.dir("c"), maxPayloadBytes: UInt64.max)),
                ("bad bootstrap", config(nodes.dir("d"), bootstrap: ["garbage"])),
                ("bad relay", config(nodes.dir("e"), relayUrls: ["not a url"])),
            ]
            for (what, cfg) in cases {
                await expectError("InvalidInput", what) { nodes.track(try await Node.open(config: cfg)) }
            }
        }
    }

    func testCallsAfterShutdownAreClosed() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let g = try await a.joinPassphrase(passphrase: pass, name: "closing")
            let nodeId = a.nodeId()
            try await a.shutdown()
            try await a.shutdown() // twice is fine
            XCTAssertEqual(a.nodeId(), nodeId)
            await expectError("Closed", "status") { try await a.status() }
            await expectError("Closed", "addr") { try await a.addr() }
            await expectError("Closed", "groups") { try await a.groups() }
            await expectError("Closed", "publish") { try await a.publish(groupId: g.groupId, payload: Data("x".utf8)) }
            await expectError("Closed", "entries") { try await a.entries(groupId: g.groupId, afterCursor: 0, limit: 10) }
            await expectError("Closed", "joinPassphrase") { try await a.joinPassphrase(passphrase: pass, name: "other") }
            await expectError("Closed", "addPeer") { try await a.addPeer(addr: "whatever") }
            await expectError("Closed", "pause") { try await a.pause() }
            await expectError("Closed", "resume") { try await a.resume() }
            await expectError("Closed", "networkChanged") { try await a.networkChanged() }
            await expectError("Closed", "subscribe") { try a.subscribe(listener: Recorder()) }
        }
    }
}

// MARK: - Managed groups (python/tests/test_managed.py)

/// The payloads a node holds in a group.
func payloads(_ node: Node, _ groupId: String) async throws -> Set<Data> {
    Set(try await entriesOf(node, groupId).map { $0.payload })
}

/// A group's epoch on a node.
func epochOf(_ node: Node, _ groupId: String) async throws -> UInt64? {
    try await node.groups().first(where: { $0.groupId == groupId })?.epoch
}

final class ManagedGroupTests: CoveyTestCase {
    func testCreateInviteByLinkAndCodeRemoveAndLeave() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let b = try await nodes.open()
            // A short code is found through the DHT: C knows A as its bootstrap.
            let ticket = try await a.addr()
            let c = try await nodes.open(bootstrap: [ticket])

            let info = try await a.createGroup(name: "family")
            XCTAssertEqual(info.kind, .managed)
            XCTAssertEqual(info.epoch, 0)
            XCTAssertEqual(info.memberCount, 1)
            let g = info.groupId
            let me = try await a.members(groupId: g)
            XCTAssertEqual(me.count, 1)
            XCTAssertEqual(me.first?.isSelf, true)
            XCTAssertEqual(me.first?.role, .admin)

            // B joins by link, C by short code.
            let forB = try await a.createInvite(groupId: g, ttlSecs: 3600, singleUse: true)
            XCTAssertTrue(forB.link.hasPrefix("covey:invite/"))
            XCTAssertTrue(forB.expiresAtMs > 0)
            let joined = try await b.acceptInvite(invite: forB.link)
            XCTAssertEqual(joined.groupId, g)
            XCTAssertEqual(joined.kind, .managed)
            XCTAssertEqual(joined.name, "family")
            let forC = try await a.createInvite(groupId: g, ttlSecs: 600, singleUse: true)
            XCTAssertEqual(forC.shortCode.count, 9)
            let joinedC = try await c.acceptInvite(invite: forC.shortCode)
            XCTAssertEqual(joinedC.groupId, g)

            // Everyone publishes; everyone converges.
            _ = try await a.publish(groupId: g, payload: Data("from a".utf8))
            _ = try await b.publish(groupId: g, payload: Data("from b".utf8))
            _ = try await c.publish(groupId: g, payload: Data("from c".utf8))
            let all: Set<Data> = [Data("from a".utf8), Data("from b".utf8), Data("from c".utf8)]
            for (i, n) in [a, b, c].enumerated() {
                _ = try await eventually("all three entries on node \(i)") { () async throws -> Bool? in
                    try await payloads(n, g) == all ? true : nil
                }
            }
            let members = try await a.members(groupId: g)
            XCTAssertEqual(members.count, 3)
            XCTAssertEqual(members.filter { $0.role == .admin }.map { $0.nodeId }, [a.nodeId()])
            XCTAssertEqual(members.first(where: { $0.nodeId == c.nodeId() })?.role, .member)
            _ = try await eventually("b to know all three members") { () async throws -> Bool? in
                try await b.members(groupId: g).count == 3 ? true : nil
            }

            // A member may not remove or invite; a malformed node id is invalid input.
            await expectError("PermissionDenied", "a member removing the admin") {
                try await b.removeMember(groupId: g, member: a.nodeId())
            }
            await expectError("PermissionDenied", "a member inviting") {
                try await b.createInvite(groupId: g, ttlSecs: 60, singleUse: true)
            }
            await expectError("InvalidInput", "a malformed node id") {
                try await a.removeMember(groupId: g, member: "not a node id")
            }

            // A removes C: a new epoch, which B follows.
            let seen = Recorder()
            let seenByC = Recorder()
            _ = try nodes.subscribe(b, seen)
            _ = try nodes.subscribe(c, seenByC)
            try await a.removeMember(groupId: g, member: c.nodeId())
            let epochA = try await epochOf(a, g)
            XCTAssertEqual(epochA, 1)
            _ = try await eventually("b to reach epoch 1") { () async throws -> Bool? in
                try await epochOf(b, g) == 1 ? true : nil
            }
            try await waitUntil("a GroupChanged event at epoch 1 on b") {
                seen.groupsChanged.contains(where: { $0.groupId == g && $0.epoch == 1 })
            }

            // What A publishes after the removal reaches B, never C. C is told (the removal
            // reaches it before its session ends) and can publish no more.
            _ = try await a.publish(groupId: g, payload: Data("after".utf8))
            try await waitUntil("a removed-from-group warning on c") {
                seenByC.warningKinds.contains("removed-from-group")
            }
            await expectError("PermissionDenied", "a removed member publishing") {
                try await c.publish(groupId: g, payload: Data("c after removal".utf8))
            }
            var withAfter = all
            withAfter.insert(Data("after".utf8))
            let want = withAfter
            _ = try await eventually("b to get the post-removal entry") { () async throws -> Bool? in
                try await payloads(b, g) == want ? true : nil
            }
            try await Task.sleep(nanoseconds: 2_000_000_000)
            let onC = try await payloads(c, g)
            XCTAssertFalse(onC.contains(Data("after".utf8)))
            let onA = try await payloads(a, g)
            XCTAssertFalse(onA.contains(Data("c after removal".utf8)))
            let epochC = try await epochOf(c, g)
            XCTAssertEqual(epochC, 0)

            // B leaves: the group is gone there; A keeps it.
            try await b.leaveGroup(groupId: g)
            await expectError("NotFound", "entries after leaving") {
                try await b.entries(groupId: g, afterCursor: 0, limit: 10)
            }
            let left = try await b.groups()
            XCTAssertTrue(left.isEmpty)
        }
    }

    func testAUsedLinkAndAPassphraseGroupAreRefused() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let b = try await nodes.open()
            let c = try await nodes.open()
            let g = try await a.createGroup(name: "team").groupId
            let once = try await a.createInvite(groupId: g, ttlSecs: 60, singleUse: true)
            _ = try await b.acceptInvite(invite: once.link)
            await expectError("PermissionDenied", "a used single-use link") {
                try await c.acceptInvite(invite: once.link)
            }
            // A passphrase group has no admin, and its members no role.
            let p = try await a.joinPassphrase(passphrase: pass, name: "old-style")
            let msg = await expectError("InvalidInput", "remove in a passphrase group") {
                try await a.removeMember(groupId: p.groupId, member: b.nodeId())
            }
            XCTAssertTrue(msg.contains("passphrase groups have no admin"), msg)
            let members = try await a.members(groupId: p.groupId)
            XCTAssertTrue(members.allSatisfy { $0.role == nil })
        }
    }
}

// MARK: - Events (python/tests/test_events.py)

final class EventTests: CoveyTestCase {
    func testLocalEventsReachTheListener() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let rec = Recorder()
            _ = try nodes.subscribe(a, rec)
            let g = try await a.joinPassphrase(passphrase: pass, name: "events")
            try await waitUntil("GroupChanged") { !rec.groupsChanged.isEmpty }
            let changed = rec.groupsChanged
            XCTAssertEqual(changed.count, 1)
            XCTAssertEqual(changed[0].groupId, g.groupId)
            XCTAssertEqual(changed[0].epoch, 0)
        }
    }

    func testAThrowingListenerDoesNotStopTheNodeOrOtherListeners() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let b = try await nodes.open()
            let thrower = Thrower()
            let declared = DeclaredFailure()
            let rec = Recorder()
            _ = try nodes.subscribe(b, thrower)
            _ = try nodes.subscribe(b, declared)
            _ = try nodes.subscribe(b, rec)
            let ga = try await a.joinPassphrase(passphrase: pass, name: "raise")
            let gb = try await b.joinPassphrase(passphrase: pass, name: "raise")
            try await linkNodes(a, b)
            var wantIds = Set<String>()
            for i in 0..<5 {
                wantIds.insert(try await a.publish(groupId: ga.groupId, payload: Data("\(i)".utf8)).entryId)
            }
            let want = wantIds

            try await waitUntil("every EntryReceived on the healthy listener") {
                want.isSubset(of: Set(rec.entriesReceived.map { $0.entryId }))
            }
            // GroupChanged + PeerConnected + 5 EntryReceived at least: delivery went on.
            try await waitUntil("throwing listeners called on") {
                thrower.calls >= 6 && declared.calls >= 6
            }
            // Still alive and serving.
            let status = try await b.status()
            XCTAssertEqual(status.entries, 5)
            _ = try await b.publish(groupId: gb.groupId, payload: Data("still here".utf8))
        }
    }

    func testCancelStopsDelivery() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let rec = Recorder()
            let keep = Recorder()
            let sub = try nodes.subscribe(a, rec)
            _ = try nodes.subscribe(a, keep)
            _ = try await a.joinPassphrase(passphrase: pass, name: "first")
            try await waitUntil("the first event") { rec.groupsChanged.count == 1 }
            XCTAssertFalse(sub.isCancelled())
            sub.cancel()
            sub.cancel() // twice is fine
            XCTAssertTrue(sub.isCancelled())
            _ = try await a.joinPassphrase(passphrase: pass, name: "second")
            _ = try await a.joinPassphrase(passphrase: pass, name: "third")
            try await waitUntil("the other listener") { keep.groupsChanged.count == 3 }
            try await Task.sleep(nanoseconds: 200_000_000)
            XCTAssertEqual(rec.groupsChanged.count, 1)
        }
    }

    func testReleasingTheSubscriptionStopsDelivery() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let rec = Recorder()
            let keep = Recorder()
            var sub: Covey.Subscription? = try a.subscribe(listener: rec)
            XCTAssertNotNil(sub)
            _ = try nodes.subscribe(a, keep)
            _ = try await a.joinPassphrase(passphrase: pass, name: "one")
            try await waitUntil("the first event") { rec.events.count == 1 }
            sub = nil // ARC frees it at once; Rust's Drop cancels delivery
            _ = try await a.joinPassphrase(passphrase: pass, name: "two")
            try await waitUntil("the other listener") { keep.events.count == 2 }
            try await Task.sleep(nanoseconds: 200_000_000)
            XCTAssertEqual(rec.events.count, 1)
        }
    }

    func testShutdownEndsSubscriptions() async throws {
        try await coveyTest { nodes in
            let a = try await nodes.open()
            let sub = try a.subscribe(listener: Recorder())
            try await a.shutdown()
            // Delivery ended with the node; cancelling afterwards is harmless.
            sub.cancel()
        }
    }
}

// MARK: - Key store (python/tests/test_keystore.py)

final class KeyStoreTests: CoveyTestCase {
    func testASwiftKeyStoreHoldsTheDeviceAndGroupKeys() async throws {
        try await coveyTest { nodes in
            let ks = DictKeyStore()
            let d = nodes.dir("n")
            let node = try await Node.open(config: config(d, keyStore: ks))
            let firstId = node.nodeId()
            XCTAssertTrue(ks.stored.contains("device"))
            XCTAssertEqual(ks.secrets["device"]?.count, 32)
            let g = try await node.joinPassphrase(passphrase: "marble kelp oboe thicket", name: "keystore-group")
            XCTAssertTrue(ks.stored.contains("group-\(g.groupId)"), "\(ks.stored)")
            _ = try await node.publish(groupId: g.groupId, payload: Data("kept".utf8))
            try await node.shutdown()
            // Nothing secret went to the data dir.
            XCTAssertFalse(FileManager.default.fileExists(atPath: (d as NSString).appendingPathComponent("keys")))

            let storedBefore = ks.stored
            let again = nodes.track(try await Node.open(config: config(d, keyStore: ks)))
            XCTAssertEqual(again.nodeId(), firstId)
            XCTAssertEqual(ks.stored, storedBefore) // loaded, not re-created
            XCTAssertTrue(ks.loaded.contains("device"))
            let entries = try await again.entries(groupId: g.groupId, afterCursor: 0, limit: 10)
            XCTAssertEqual(entries.count, 1)
            XCTAssertEqual(entries.first?.payload, Data("kept".utf8))
        }
    }

    func testAKeyStoreThrowingKeyStoreErrorIsAStorageError() async throws {
        try await throwingKeyStore(declared: true)
    }

    func testAKeyStoreThrowingAnotherErrorIsAStorageError() async throws {
        try await throwingKeyStore(declared: false)
    }

    private func throwingKeyStore(declared: Bool) async throws {
        try await coveyTest { nodes in
            let d = nodes.dir("n")
            let msg = await expectError("Storage", "open with a broken key store") {
                nodes.track(try await Node.open(config: config(d, keyStore: BrokenKeyStore(declared: declared))))
            }
            XCTAssertTrue(msg.contains("key store"), msg)
            XCTAssertTrue(msg.contains("keychain locked"), msg)
            // The failed open released the data dir: a node with a working store opens it.
            _ = try await nodes.open(d, keyStore: DictKeyStore())
        }
    }

    func testAKeyStoreReturningABadDeviceKeyIsRefused() async throws {
        try await coveyTest { nodes in
            let ks = DictKeyStore()
            ks.preset("device", Data("too short".utf8))
            await expectError("Crypto", "a 9-byte device key") {
                nodes.track(try await Node.open(config: config(nodes.dir("n"), keyStore: ks)))
            }
        }
    }
}

// MARK: - Lifecycle (python/tests/test_lifecycle.py)

final class LifecycleTests: CoveyTestCase {
    func testShutdownThenReopenKeepsHistory() async throws {
        try await coveyTest { nodes in
            let d = nodes.dir("n")
            let a = try await nodes.open(d, durability: .full)
            let nodeId = a.nodeId()
            let g = try await a.joinPassphrase(passphrase: pass, name: "history")
            var metas: [EntryMeta] = []
            for i in 0..<10 {
                metas.append(try await a.publish(groupId: g.groupId, payload: Data("entry \(i)".utf8), clientId: "c\(i)"))
            }
            try await a.shutdown()

            let b = try await nodes.open(d)
            XCTAssertEqual(b.nodeId(), nodeId)
            let groups = try await b.groups()
            XCTAssertEqual(groups.map { $0.groupId }, [g.groupId])
            let entries = try await b.entries(groupId: g.groupId, afterCursor: 0, limit: 100)
            XCTAssertEqual(entries.map { $0.entryId }, metas.map { $0.entryId })
            XCTAssertEqual(entries[3].payload, Data("entry 3".utf8))
            // Idempotency survives the restart too.
            let repeated = try await b.publish(groupId: g.groupId, payload: Data("entry 0".utf8), clientId: "c0")
            XCTAssertEqual(repeated, metas[0])
            let next = try await b.publish(groupId: g.groupId, payload: Data("entry 10".utf8))
            XCTAssertEqual(next.seq, 11)
        }
    }

    func testAReleasedNodeIsShutDownInTheBackground() async throws {
        try await coveyTest { nodes in
            let d = nodes.dir("n")
            var node: Node? = try await Node.open(config: config(d))
            let nodeId = node?.nodeId()
            node = nil // ARC frees it; Rust's Drop shuts the node down
            XCTAssertNil(node)

            let again = try await eventually("the released node to release its data dir") { () async throws -> Node? in
                do {
                    return try await Node.open(config: config(d))
                } catch let error as CoveyError {
                    if kind(error) == "Conflict" { return nil }
                    throw error
                }
            }
            nodes.track(again)
            XCTAssertEqual(again.nodeId(), nodeId)
        }
    }

    func testLogsReachASwiftLogger() async throws {
        try await coveyTest { nodes in
            // A throwing logger is harmless.
            setLogger(logger: ThrowingLogger(), level: .info)
            let a = try await Node.open(config: config(nodes.dir("a")))
            try await a.shutdown()

            let logs = Collect()
            setLogger(logger: logs, level: .info)
            let b = try await Node.open(config: config(nodes.dir("b")))
            try await b.shutdown()
            setLogger(logger: Collect(), level: .error) // quiet for the other tests
            let records = logs.records
            let opened = records.filter { $0.message.contains("open") && $0.target.hasPrefix("covey_core") }
            XCTAssertFalse(opened.isEmpty, "\(records.map { $0.message })")
            XCTAssertTrue(records.allSatisfy { [LogLevel.error, LogLevel.warn, LogLevel.info].contains($0.level) })
        }
    }

    func testConfigDefaultsSendNothing() {
        let cfg = NodeConfig(dataDir: "/tmp/x")
        XCTAssertNil(cfg.bindAddr)
        XCTAssertEqual(cfg.bootstrap, [])
        XCTAssertEqual(cfg.relayUrls, [])
        XCTAssertNil(cfg.keyStore)
        XCTAssertNil(cfg.durability)
        XCTAssertFalse(cfg.natTraversal)
        XCTAssertNil(cfg.maxPayloadBytes)
        XCTAssertNil(cfg.dhtRendezvous)
        XCTAssertNil(cfg.dhtMaxValueBytes)
        XCTAssertEqual(message(CoveyError.NotFound(message: "gone")), "gone")
    }
}
