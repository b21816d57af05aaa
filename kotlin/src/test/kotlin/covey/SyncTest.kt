// Groups, publishing and replication between nodes in one JVM (mirrors python/tests/test_sync.py).
package covey

import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotEquals
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Test

class SyncTest : CoveyTestBase() {

    @Test
    fun `two nodes join, publish and replicate`() = coveyTest { nodes ->
        val a = nodes.open()
        val b = nodes.open()
        assertNotEquals(a.nodeId(), b.nodeId())

        val ga = a.joinPassphrase(PASS, "friends")
        val gb = b.joinPassphrase(PASS, "friends")
        assertEquals(ga.groupId, gb.groupId)
        assertEquals(64, ga.groupId.length)
        assertEquals(GroupKind.PASSPHRASE, ga.kind)
        assertEquals("friends", ga.name)
        assertEquals(0uL, ga.epoch)

        val seen = Recorder()
        nodes.subscribe(b, seen)

        val meta = a.publish(ga.groupId, "hello from a".toByteArray())
        assertEquals(a.nodeId(), meta.author)
        assertEquals(1uL, meta.seq)
        assertEquals(ga.groupId, meta.groupId)
        assertEquals(64, meta.entryId.length)

        link(a, b)

        val got = eventually("b to receive a's entry") {
            entriesOf(b, gb.groupId).singleOrNull { it.entryId == meta.entryId }
        }
        assertContentEquals("hello from a".toByteArray(), got.payload)
        assertEquals(a.nodeId(), got.author)
        assertEquals(1uL, got.seq)
        assertEquals(meta.lamport, got.lamport)

        // Published after the link: pushed live.
        val meta2 = b.publish(gb.groupId, "and back from b".toByteArray())
        eventually("a to receive b's entry") {
            entriesOf(a, ga.groupId).singleOrNull { it.entryId == meta2.entryId }
        }

        // The Kotlin listener saw the entry arrive, and the peer connect.
        val ev = eventually("an EntryReceived event on b") {
            seen.of<Event.EntryReceived>().singleOrNull { it.entryId == meta.entryId }
        }
        assertEquals(gb.groupId, ev.groupId)
        assertEquals(a.nodeId(), ev.author)
        assertEquals(got.cursor, ev.cursor)
        assertTrue(seen.of<Event.PeerConnected>().any { it.peer == a.nodeId() })

        // Lookup by id, members and status.
        val one = b.entry(gb.groupId, meta.entryId)
        assertNotNull(one)
        assertContentEquals("hello from a".toByteArray(), one.payload)
        assertNull(b.entry(gb.groupId, "00".repeat(32)))
        val members = b.members(gb.groupId).associateBy { it.nodeId }
        assertTrue(members.getValue(b.nodeId()).isSelf)
        assertEquals(1uL, members.getValue(a.nodeId()).lastSeq)
        val status = b.status()
        assertEquals(b.nodeId(), status.nodeId)
        assertEquals(1u, status.groups)
        assertEquals(2uL, status.entries)
        assertTrue(a.nodeId() in status.connectedPeers)
        assertTrue(status.counters.received >= 1uL)
        assertEquals(1uL, status.counters.published)
        assertEquals(listOf(gb.groupId), b.groups().map { it.groupId })
    }

    @Test
    fun `three nodes converge`() = coveyTest { nodes ->
        val all = List(3) { nodes.open() }
        val (a, b, c) = all
        val groups = all.map { it.joinPassphrase(PASS, "three") }
        val gid = groups[0].groupId
        assertTrue(groups.all { it.groupId == gid })

        // A star around a: b and c learn each other's entries through a.
        link(a, b)
        link(a, c)
        val published = mutableSetOf<String>()
        all.forEachIndexed { i, n ->
            repeat(3) { j -> published += n.publish(gid, "node $i entry $j".toByteArray()).entryId }
        }
        assertEquals(9, published.size)

        for ((i, n) in all.withIndex()) {
            eventually("all nine entries on node $i") {
                if (entriesOf(n, gid).map { it.entryId }.toSet() == published) Unit else null
            }
        }

        // Paging by cursor is gapless and strictly increasing.
        val page1 = c.entries(gid, 0uL, 4u)
        assertEquals(4, page1.size)
        val page2 = c.entries(gid, page1.last().cursor, 100u)
        val cursors = (page1 + page2).map { it.cursor }
        assertEquals(9, cursors.size)
        assertEquals(cursors.toSortedSet().toList(), cursors)
    }

    @Test
    fun `idempotent publish and conflict`() = coveyTest { nodes ->
        val a = nodes.open()
        val g = a.joinPassphrase(PASS, "idem")
        val first = a.publish(g.groupId, "payload".toByteArray(), "client-1")
        val again = a.publish(g.groupId, "payload".toByteArray(), clientId = "client-1")
        assertEquals(first, again)
        val err = assertFailsWith<CoveyException.IdempotencyConflict> {
            a.publish(g.groupId, "other payload".toByteArray(), "client-1")
        }
        assertTrue("client-1" in err.detail, err.detail)
        val other = a.publish(g.groupId, "payload".toByteArray(), "client-2")
        assertNotEquals(first.entryId, other.entryId)
        assertEquals(2uL, other.seq)
        assertEquals(2, entriesOf(a, g.groupId).size)
    }

    @Test
    fun `pause, resume and networkChanged`() = coveyTest { nodes ->
        val a = nodes.open()
        a.pause()
        assertTrue(a.status().paused)
        a.resume()
        assertFalse(a.status().paused)
        a.networkChanged()
    }

    @Test
    fun `concurrent calls from coroutines`() = coveyTest { nodes ->
        val a = nodes.open()
        val g = a.joinPassphrase(PASS, "concurrent")
        val metas = coroutineScope {
            (0 until 50).map { i -> async { a.publish(g.groupId, "$i".toByteArray()) } }.awaitAll()
        }
        assertEquals((1uL..50uL).toList(), metas.map { it.seq }.sorted())
        val statuses = coroutineScope { List(20) { async { a.status() } }.awaitAll() }
        assertTrue(statuses.all { it.entries == 50uL })
    }

    @Test
    fun `a cancelled call leaves the node usable`() = coveyTest { nodes ->
        val a = nodes.open()
        // Argon2id takes far longer than 1 ms: the coroutine gives up, the node does not care.
        assertNull(withTimeoutOrNull(1) { a.joinPassphrase(PASS, "slow") })
        val g = a.joinPassphrase(PASS, "slow")
        a.publish(g.groupId, "fine".toByteArray())
        assertEquals(1uL, a.status().entries)
    }
}
