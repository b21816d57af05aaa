// Event delivery through listeners implemented in Kotlin (mirrors python/tests/test_events.py).
package covey

import java.util.concurrent.atomic.AtomicInteger
import kotlin.time.Duration.Companion.milliseconds
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import kotlinx.coroutines.delay
import org.junit.jupiter.api.Test

/** Throws an undeclared exception from every call. */
class Thrower : EventListener {
    val calls = AtomicInteger()

    override fun onEvent(event: Event) {
        calls.incrementAndGet()
        throw IllegalStateException("listener bug")
    }
}

/** Throws the declared ListenerException from every call. */
class DeclaredFailure : EventListener {
    val calls = AtomicInteger()

    override fun onEvent(event: Event) {
        calls.incrementAndGet()
        throw ListenerException.Failed("declared failure")
    }
}

class EventsTest : CoveyTestBase() {

    @Test
    fun `local events reach the listener`() = coveyTest { nodes ->
        val a = nodes.open()
        val rec = Recorder()
        nodes.subscribe(a, rec)
        val g = a.joinPassphrase(PASS, "events")
        waitUntil("GroupChanged") { rec.of<Event.GroupChanged>().isNotEmpty() }
        val ev = rec.of<Event.GroupChanged>().single()
        assertEquals(g.groupId, ev.groupId)
        assertEquals(0uL, ev.epoch)
    }

    @Test
    fun `a throwing listener does not stop the node or other listeners`() = coveyTest { nodes ->
        val a = nodes.open()
        val b = nodes.open()
        val thrower = Thrower()
        val declared = DeclaredFailure()
        val rec = Recorder()
        nodes.subscribe(b, thrower)
        nodes.subscribe(b, declared)
        nodes.subscribe(b, rec)
        val ga = a.joinPassphrase(PASS, "raise")
        val gb = b.joinPassphrase(PASS, "raise")
        link(a, b)
        val want = (0 until 5).map { a.publish(ga.groupId, "$it".toByteArray()).entryId }.toSet()

        waitUntil("every EntryReceived on the healthy listener") {
            rec.of<Event.EntryReceived>().map { it.entryId }.toSet().containsAll(want)
        }
        // GroupChanged + PeerConnected + 5 EntryReceived at least: delivery went on after throws.
        waitUntil("throwing listeners called on") {
            thrower.calls.get() >= 6 && declared.calls.get() >= 6
        }
        // Still alive and serving.
        assertEquals(5uL, b.status().entries)
        b.publish(gb.groupId, "still here".toByteArray())
    }

    @Test
    fun `cancel stops delivery`() = coveyTest { nodes ->
        val a = nodes.open()
        val rec = Recorder()
        val keep = Recorder()
        val sub = nodes.subscribe(a, rec)
        nodes.subscribe(a, keep)
        a.joinPassphrase(PASS, "first")
        waitUntil("the first event") { rec.of<Event.GroupChanged>().size == 1 }
        assertFalse(sub.isCancelled())
        sub.cancel()
        sub.cancel() // twice is fine
        assertTrue(sub.isCancelled())
        a.joinPassphrase(PASS, "second")
        a.joinPassphrase(PASS, "third")
        waitUntil("the other listener") { keep.of<Event.GroupChanged>().size == 3 }
        delay(200.milliseconds)
        assertEquals(1, rec.of<Event.GroupChanged>().size)
    }

    @Test
    fun `closing the subscription stops delivery`() = coveyTest { nodes ->
        // Kotlin's equivalent of dropping it: close() frees the Rust object now.
        val a = nodes.open()
        val rec = Recorder()
        val keep = Recorder()
        val sub = a.subscribe(rec)
        nodes.subscribe(a, keep)
        a.joinPassphrase(PASS, "one")
        waitUntil("the first event") { rec.events.size == 1 }
        sub.close()
        a.joinPassphrase(PASS, "two")
        waitUntil("the other listener") { keep.events.size == 2 }
        delay(200.milliseconds)
        assertEquals(1, rec.events.size)
    }

    @Test
    fun `shutdown ends subscriptions`() = coveyTest { nodes ->
        val a = nodes.open()
        val sub = a.subscribe(Recorder())
        a.shutdown()
        // Delivery ended with the node; cancelling afterwards is harmless.
        sub.cancel()
        sub.close()
    }
}
