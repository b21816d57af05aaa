// Every failure reaches Kotlin as the right CoveyException kind; nothing crashes the JVM
// (mirrors python/tests/test_errors.py; Kotlin's types rule out Python's TypeError cases).
package covey

import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertIs
import org.junit.jupiter.api.Test

class ErrorsTest : CoveyTestBase() {

    @Test
    fun `error kinds for bad input`() = coveyTest { nodes ->
        val a = nodes.open()
        val g = a.joinPassphrase(PASS, "errors")

        assertFailsWith<CoveyException.InvalidInput>("bad ticket") { a.addPeer("not a ticket") }
        assertFailsWith<CoveyException.InvalidInput>("own address") { a.addPeer(a.addr()) }
        assertFailsWith<CoveyException.NotFound>("unknown group") {
            a.publish("ab".repeat(32), "x".toByteArray())
        }
        assertFailsWith<CoveyException.NotFound>("members of unknown group") {
            a.members("cd".repeat(32))
        }
        assertFailsWith<CoveyException.InvalidInput>("group id not hex") {
            a.publish("not-hex", "x".toByteArray())
        }
        assertFailsWith<CoveyException.InvalidInput>("entry id not hex") { a.entry(g.groupId, "xyz") }
        assertFailsWith<CoveyException.InvalidInput>("empty passphrase") { a.joinPassphrase("", "name") }
        assertFailsWith<CoveyException.InvalidInput>("empty name") { a.joinPassphrase(PASS, "") }
        assertFailsWith<CoveyException.InvalidInput>("limit 0") { a.entries(g.groupId, 0uL, 0u) }
        assertFailsWith<CoveyException.InvalidInput>("empty client id") {
            a.publish(g.groupId, "x".toByteArray(), "")
        }

        // Every kind is a CoveyException and carries its detail; `message` carries it too.
        val e: CoveyException = assertFailsWith<CoveyException> { a.addPeer("not a ticket") }
        assertIs<CoveyException.InvalidInput>(e)
        assertContains(e.detail, "ticket")
        assertContains(e.message ?: "", e.detail)

        // The node is still fine.
        assertEquals(1u, a.status().groups)
    }

    @Test
    fun `weak passphrase is invalid input`() = coveyTest { nodes ->
        val a = nodes.open()
        // zxcvbn score 2 of 4, under the floor of 3: refused before any key derivation.
        val e = assertFailsWith<CoveyException.InvalidInput>("score 2") {
            a.joinPassphrase("tiger7window", "weak")
        }
        assertContains(e.detail, "too weak")
        assertFalse(e.detail.contains("tiger7window"), e.detail)
        // Strong alone, but it is the group's name.
        assertFailsWith<CoveyException.InvalidInput>("the group's name") {
            a.joinPassphrase("kestrel hollow lantern society", "Kestrel Hollow Lantern Society")
        }
        assertEquals(0u, a.status().groups)
    }

    @Test
    fun `delivery of a fresh local entry and its errors`() = coveyTest { nodes ->
        val a = nodes.open()
        val g = a.joinPassphrase(PASS, "receipts")
        val meta = a.publish(g.groupId, "mine".toByteArray())
        // Nobody else has it yet, and nobody else is known.
        val d = a.delivery(g.groupId, meta.entryId)
        assertEquals(listOf<String>(), d.ackedBy)
        assertFalse(d.allMembers)
        assertFailsWith<CoveyException.NotFound>("unknown entry") {
            a.delivery(g.groupId, "00".repeat(32))
        }
        assertFailsWith<CoveyException.NotFound>("unknown group") {
            a.delivery("cd".repeat(32), meta.entryId)
        }
        assertFailsWith<CoveyException.InvalidInput>("entry id not hex") { a.delivery(g.groupId, "xyz") }
        assertFailsWith<CoveyException.InvalidInput>("group id not hex") {
            a.delivery("not-hex", meta.entryId)
        }
    }

    @Test
    fun `dht on a lone node`() = coveyTest { nodes ->
        val a = nodes.open()
        // With no DHT peers the record is kept locally.
        assertEquals(1uL, a.dhtPut("n", "v1".toByteArray(), 60uL, null))
        val r = a.dhtGet(a.nodeId(), "n")!!
        assertEquals(a.nodeId(), r.publisher)
        assertEquals("n", r.name)
        assertEquals("v1", r.value.decodeToString())
        assertEquals(1uL, r.seq)
        assertFailsWith<CoveyException.Conflict>("stale expected seq") {
            a.dhtPut("n", "v2".toByteArray(), 60uL, 0uL)
        }
        assertFailsWith<CoveyException.InvalidInput>("empty name") { a.dhtPut("", ByteArray(1), 60uL, null) }
        assertFailsWith<CoveyException.InvalidInput>("publisher not hex") { a.dhtGet("not-hex", "n") }
        assertEquals(listOf<String>(), a.dhtProviders("unknown".toByteArray()))
    }

    @Test
    fun `dht status and value limit on a lone node`() = coveyTest { nodes ->
        // The default limit is 1 KiB: 1024 bytes go in, 1025 do not.
        val a = nodes.open()
        val status = a.status()
        assertEquals(0u, status.dht.contacts, "${status.dht}")
        assertEquals(0uL, status.dht.rendezvousFound, "${status.dht}")
        assertEquals(1uL, a.dhtPut("d", ByteArray(1024), 60uL, null))
        val err = assertFailsWith<CoveyException.InvalidInput>("1025 bytes against the default") {
            a.dhtPut("d", ByteArray(1025), 60uL, null)
        }
        assertContains(err.detail, "1024")

        // A configured 2 KiB limit, with rendezvous off.
        val b = nodes.open(dhtMaxValueBytes = 2048uL, dhtRendezvous = false)
        assertEquals(1uL, b.dhtPut("v", ByteArray(2048) { 'y'.code.toByte() }, 60uL, null))
        val err2 = assertFailsWith<CoveyException.InvalidInput>("2049 bytes against 2048") {
            b.dhtPut("v", ByteArray(2049), 60uL, null)
        }
        assertContains(err2.detail, "2048")
        val r = b.dhtGet(b.nodeId(), "v")!!
        assertEquals(1uL, r.seq, "the refused put changed nothing")
        assertEquals(2048, r.value.size)
        val bs = b.status()
        assertEquals(0u, bs.dht.contacts, "${bs.dht}")
        assertEquals(0uL, bs.dht.rendezvousFound, "${bs.dht}")
    }

    @Test
    fun `dht value limit out of range is refused at open`() = coveyTest { nodes ->
        for (bytes in listOf(0uL, 32uL * 1024uL + 1uL, 40_000uL, ULong.MAX_VALUE)) {
            assertFailsWith<CoveyException.InvalidInput>("dhtMaxValueBytes $bytes") {
                nodes.track(Node.open(config(nodes.dir("n$bytes"), dhtMaxValueBytes = bytes)))
            }
        }
        // The 32 KiB ceiling itself is allowed.
        val n = nodes.open(dhtMaxValueBytes = 32uL * 1024uL)
        assertEquals(1uL, n.dhtPut("big", ByteArray(32 * 1024), 60uL, null))
    }

    @Test
    fun `oversized payload is invalid input`() = coveyTest { nodes ->
        val small = nodes.open(maxPayloadBytes = 1024uL)
        val g = small.joinPassphrase(PASS, "small")
        small.publish(g.groupId, ByteArray(1024) { 'x'.code.toByte() })
        val err = assertFailsWith<CoveyException.InvalidInput> {
            small.publish(g.groupId, ByteArray(1025) { 'x'.code.toByte() })
        }
        assertContains(err.detail, "1024")

        // A huge payload against the default 1 MiB limit.
        val default = nodes.open()
        val g2 = default.joinPassphrase(PASS, "big")
        assertFailsWith<CoveyException.InvalidInput> {
            default.publish(g2.groupId, ByteArray(16 * 1024 * 1024))
        }
    }

    @Test
    fun `data dir in use is conflict`() = coveyTest { nodes ->
        val d = nodes.dir("shared")
        nodes.open(d)
        assertFailsWith<CoveyException.Conflict> { nodes.track(Node.open(config(d))) }
    }

    @Test
    fun `bad config is invalid input`() = coveyTest { nodes ->
        suspend fun refused(what: String, cfg: NodeConfig) {
            assertFailsWith<CoveyException.InvalidInput>(what) { nodes.track(Node.open(cfg)) }
        }
        refused("bind addr", NodeConfig(dataDir = nodes.dir("a"), bindAddr = "nowhere"))
        refused("empty data dir", NodeConfig(dataDir = ""))
        refused("zero payload limit", config(nodes.dir("b"), maxPayloadBytes = 0uL))
        refused("huge payload limit", config(nodes.dir("c"), maxPayloadBytes = ULong.MAX_VALUE))
        refused("bad bootstrap", config(nodes.dir("d"), bootstrap = listOf("garbage")))
        refused("bad relay", config(nodes.dir("e"), relayUrls = listOf("not a url")))
    }

    @Test
    fun `calls after shutdown are closed`() = coveyTest { nodes ->
        val a = nodes.open()
        val g = a.joinPassphrase(PASS, "closing")
        val nodeId = a.nodeId()
        a.shutdown()
        a.shutdown() // twice is fine
        assertEquals(nodeId, a.nodeId())
        fun call(name: String, f: suspend () -> Unit) = name to f
        val calls = listOf(
            call("status") { a.status() },
            call("addr") { a.addr() },
            call("groups") { a.groups() },
            call("publish") { a.publish(g.groupId, "x".toByteArray()) },
            call("entries") { a.entries(g.groupId, 0uL, 10u) },
            call("joinPassphrase") { a.joinPassphrase(PASS, "other") },
            call("addPeer") { a.addPeer("whatever") },
            call("pause") { a.pause() },
            call("resume") { a.resume() },
            call("networkChanged") { a.networkChanged() },
            call("subscribe") { a.subscribe(Recorder()) },
        )
        for ((name, call) in calls) {
            assertFailsWith<CoveyException.Closed>(name) { call() }
        }
    }
}
